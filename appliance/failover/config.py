"""``[failover]``: this terminal's side of a main/backup pair (docs/failover.md, issue 10).

Absent, or ``enabled = false``: a single terminal, always active, as before. Pins are BCM numbers on
the backend of ``[drivers.gpio]`` (``pi``, ``mock``, ``sim``, or the lab's ``wire``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivers.gpio.config import BCM_PINS
from kiosk_core.config import Strict

HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.:\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):(?P<port>[0-9]{1,5})$")


def split_host_port(value: str) -> tuple[str, int]:
    """``"10.71.3.1:7700"`` -> ``("10.71.3.1", 7700)``; ``"[::1]:7700"`` -> ``("::1", 7700)``.
    Raises ValueError saying what is allowed."""
    m = HOST_PORT.match(value)
    port = int(m.group("port")) if m else 0
    if m is None or not 1 <= port <= 65535:
        raise ValueError(f"{value!r} must be host:port (a port 1-65535), e.g. 10.71.3.1:7700")
    return m.group("host").strip("[]"), port


class FailoverConfig(Strict):
    enabled: bool = Field(False, description="this terminal is one of a main/backup pair with an arbiter")
    heartbeat_pin: int = Field(5, description="BCM pin of the heartbeat line to the arbiter (output)")
    lease_pin: int = Field(6, description="BCM pin of the lease line from the arbiter (input)")
    heartbeat_ms: int = Field(50, ge=5, le=1000, description="the heartbeat line toggles this often")
    lease_ms: int = Field(
        200,
        ge=20,
        le=5000,
        description="the lease is held while the last two lease edges are both younger than this",
    )
    sample_ms: float = Field(2.0, ge=0.5, le=20, description="how often the lease line is sampled")
    listen: str = Field("0.0.0.0:7700", description="host:port the pair link listens on")
    peer: str = Field("", description="host:port of the other terminal's pair link")
    pair_key_file: Path | None = Field(
        None, description="the pair's shared HMAC-SHA256 key (>= 16 bytes, mode 0600), same file on both"
    )
    prefer: Literal["main", "backup"] | None = Field(
        None,
        description='which terminal should be active when both are healthy ("" or absent: no preference); '
        "failover.prefer overrides it at run time",
    )
    unhealthy_grace_ms: int = Field(
        2000,
        ge=0,
        le=60000,
        description="the local bus or the session down this long stops the heartbeat (a blip does not)",
    )
    yield_timeout_s: float = Field(
        5.0, gt=0, le=60, description="a yield (failover.switch) waits this long for the peer to take over"
    )

    @field_validator("prefer", mode="before")
    @classmethod
    def _no_prefer(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("heartbeat_pin", "lease_pin")
    @classmethod
    def _pin(cls, v: int) -> int:
        if v not in BCM_PINS:
            raise ValueError("must be a BCM GPIO number 2-27")
        return v

    @field_validator("listen", "peer")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if v:
            split_host_port(v)
        return v

    @model_validator(mode="after")
    def _complete(self) -> FailoverConfig:
        if self.heartbeat_pin == self.lease_pin:
            raise ValueError(f"heartbeat_pin and lease_pin both use GPIO{self.lease_pin}")
        if self.enabled:
            missing = [k for k in ("listen", "peer") if not getattr(self, k)]
            if self.pair_key_file is None:
                missing.append("pair_key_file")
            if missing:
                raise ValueError(f"with enabled = true, set {', '.join(missing)}")
        return self
