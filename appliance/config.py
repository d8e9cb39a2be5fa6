"""The whole kiosk's configuration, owned by the appliance: the shared sections of
``kiosk_core.config``, the fleet link's, and every process's own (drivers, media, session).

The loader, the strict base and the located error messages are ``kiosk_core.config``'s. A
platform-pushed overlay (``config/desired``, stored under ``data_dir``) is merged on top by
``appliance.desired``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from appliance.failover.config import FailoverConfig
from appliance.session.config import SessionConfig
from drivers.config import DriversConfig
from edge_media.config import CallTarget as CallTarget  # the session's call.accepted validates it
from edge_media.config import MediaConfig, build_problems
from kiosk_core import config as core
from kiosk_core.config import (
    BusConfig,
    DeviceConfig,
    LoggingConfig,
    StorageConfig,
    Strict,
    merge,
    read_toml,
    redacted,
    resolve_path,
    topic_root,
)
from kiosk_core.errors import ConfigError

__all__ = [
    "ConfigError",
    "KioskConfig",
    "check",
    "load",
    "merge",
    "parse",
    "read_toml",
    "redacted",
    "resolve_path",
]


class TlsConfig(Strict):
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    handshake_timeout_s: float = Field(10.0, gt=0, le=120)


# The devices' own topics (kiosk_core.config.topic_root) and the one tree under them that may hold
# replies to platform requests.
DEVICE_TREE = "kiosk/v1"
REPLY_TREE = "kiosk/v1/replies"
# Where the platform's requesters listen: the test platform (platform/replies/<id>), the county
# centre (platform/<client id>/replies) and operators behind the generated broker ACL
# (kiosk/v1/replies/<operator>/...). docs/mqtt.md "Response Topics".
DEFAULT_REPLY_PREFIXES = ("platform/replies", "platform/+/replies", REPLY_TREE)


def reply_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a reply prefix, or None. A prefix is MQTT topic levels; ``+`` stands
    for exactly one level."""
    levels = prefix.split("/")
    if not 0 < len(prefix) <= 200:
        return "must be 1-200 characters"
    if "#" in prefix or "\x00" in prefix:
        return "may not contain # or NUL (a prefix already covers every level below it)"
    if not all(levels):
        return "may not have empty levels (no leading, trailing or double /)"
    if any("+" in level and level != "+" for level in levels):
        return "+ may only stand for a whole level (platform/+/replies)"
    if levels[0] == "+" or levels[0].startswith("$"):
        return "must start with a fixed level (not + and not a $ system topic)"
    if levels[0] == "kiosk" and levels[:3] != REPLY_TREE.split("/"):
        return f"kiosk/ holds the devices' own topics; only {REPLY_TREE}/... may hold replies"
    return None


class FleetConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    keepalive_s: int = Field(30, ge=5, le=3600)
    telemetry_interval_s: float = Field(30, ge=1, le=86400)
    tls: TlsConfig | None = None
    username: str | None = None
    password: SecretStr | None = None
    reconnect_base_s: float = Field(1.0, gt=0, le=60)
    reconnect_cap_s: float = Field(300.0, gt=0, le=3600)
    initial_delay_max_s: float = Field(
        5.0, ge=0, le=600, description="random delay before the first connect (fleet spread)"
    )
    drain_rate_per_s: float = Field(2000.0, gt=0, description="cap on backlog publishing after an outage")
    max_inflight: int = Field(256, ge=1, le=65535)
    reply_prefixes: tuple[str, ...] = Field(
        DEFAULT_REPLY_PREFIXES,
        min_length=1,
        max_length=32,
        description="a command runs only if its Response Topic lies under one of these (+ = one level)",
    )

    @field_validator("reply_prefixes")
    @classmethod
    def _reply_prefixes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in v:
            problem = reply_prefix_problem(prefix)
            if problem:
                raise ValueError(f"reply prefix {prefix[:80]!r} {problem}")
        return v


DBUS_ADDRESS = re.compile(r"^(unix|tcp):[A-Za-z0-9_./,=:%-]+(;(unix|tcp):[A-Za-z0-9_./,=:%-]+)*$")


class OtaConfig(Strict):
    """``[ota]``: firmware updates through RAUC (docs/ota.md)."""

    dbus_address: str = Field(
        "",
        max_length=500,
        description="the D-Bus where RAUC serves de.pengutronix.rauc; empty: the system bus",
    )
    health_timeout_s: float = Field(
        120.0,
        ge=5,
        le=3600,
        description="after booting a new slot, how long the health checks may take before it is marked "
        "bad and the kiosk falls back to the old one",
    )
    max_bundle_mb: float = Field(1024.0, gt=0, le=16384, description="largest bundle the kiosk downloads")
    download_timeout_s: float = Field(
        3600.0, ge=10, le=86400, description="the whole download of one bundle, resumed parts included"
    )
    allow_plain_loopback: bool = Field(
        False,
        description="accept http:// bundle URLs on a loopback address and file:// paths (tests, a "
        "technician's bench); otherwise bundles come over https:// only",
    )

    @field_validator("dbus_address")
    @classmethod
    def _dbus_address(cls, v: str) -> str:
        if v and not DBUS_ADDRESS.match(v):
            raise ValueError(
                "must be empty (the system bus) or a D-Bus address such as "
                "unix:path=/run/dbus/system_bus_socket"
            )
        return v


class KioskConfig(Strict):
    device: DeviceConfig
    fleet: FleetConfig = FleetConfig()
    bus: BusConfig = BusConfig()
    storage: StorageConfig = StorageConfig()
    logging: LoggingConfig = LoggingConfig()
    drivers: DriversConfig = DriversConfig()
    media: MediaConfig = MediaConfig()
    session: SessionConfig = SessionConfig()
    ota: OtaConfig = OtaConfig()
    failover: FailoverConfig = FailoverConfig()

    @property
    def topic_root(self) -> str:
        return topic_root(self.device)


def parse(data: dict[str, Any], source: str = "<config>") -> KioskConfig:
    return core.parse(KioskConfig, data, source)


def load(path: str | os.PathLike[str] | None = None, overlay: dict[str, Any] | None = None) -> KioskConfig:
    """Read, merge the optional overlay, validate. Raises ``ConfigError`` listing every problem."""
    return core.load(KioskConfig, path, overlay)


def check(path: str | os.PathLike[str] | None = None) -> KioskConfig:
    """``load`` plus what only this machine can answer: can its FFmpeg build do what ``[media]``
    asks (``edge_media.config.build_problems``)? ``kiosk config check`` uses it; the daemon's own
    loads do not (they would import PyAV into the appliance)."""
    p = resolve_path(path)
    cfg = load(p)
    problems = build_problems(cfg.media)
    if problems:
        raise ConfigError(str(p), problems)
    return cfg
