"""``[drivers.switcher]``: which HDMI/AV matrix, over which wire, speaking which protocol."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kiosk_core.config import Strict

DEFAULT_TCP_PORT = {"extron": 23, "kramer": 5000, "ascii": 4001}
TEMPLATE_CHARS = re.compile(r"^[\x20-\x7e]+$")


class AsciiProfile(Strict):
    """A generic matrix's dialect: command templates with ``[x]`` (input) and ``[y]`` (output) and
    regular expressions for its replies. The defaults describe the common "1V2." family of matrices
    (and the simulator's ascii dialect)."""

    route_all: str = Field("[x]B[y].", description="tie input [x] to output [y], video and audio")
    route_video: str = "[x]V[y]."
    route_audio: str = "[x]A[y]."
    query_video: str = Field("Status[y]V.", description="ask which input output [y] shows")
    query_audio: str = "Status[y]A."
    route_reply: str = Field(
        r"^(?P<input>\d+)[BVA](?P<output>\d+) OK$",
        description="regex of the acknowledgement; groups input/output are checked",
    )
    query_reply: str = Field(
        r"^Out(?P<output>\d+) [VA] In(?P<input>\d+)$",
        description="regex of the read-back answer; group 'input' is required",
    )
    error_reply: str = Field(r"^(?:ERR|Error)[ :]*(?P<code>\w*)$", description="regex of an error answer")
    # A Literal, not a str: the config base strips whitespace from strings, which would eat "\r\n".
    suffix: Literal["", "\r", "\n", "\r\n"] = Field("", description="appended to every command")

    @field_validator("route_all", "route_video", "route_audio")
    @classmethod
    def _route_template(cls, v: str) -> str:
        if not TEMPLATE_CHARS.match(v) or "[x]" not in v or "[y]" not in v:
            raise ValueError("must be printable ASCII containing [x] (input) and [y] (output)")
        return v

    @field_validator("query_video", "query_audio")
    @classmethod
    def _query_template(cls, v: str) -> str:
        if not TEMPLATE_CHARS.match(v) or "[y]" not in v:
            raise ValueError("must be printable ASCII containing [y] (output)")
        return v

    @field_validator("route_reply", "query_reply", "error_reply")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @field_validator("query_reply")
    @classmethod
    def _query_group(cls, v: str) -> str:
        if "input" not in re.compile(v).groupindex:
            raise ValueError("needs a named group (?P<input>\\d+) for the input number")
        return v


class SwitcherConfig(Strict):
    backend: Literal["serial", "tcp", "sim"] = "tcp"
    protocol: Literal["extron", "kramer", "ascii"] = "extron"
    model: str = Field("", max_length=64, description="shown in inventory; defaults to the protocol's name")
    host: str = Field("192.168.1.50", description="tcp: the switcher's address")
    port: int | str | None = Field(
        None,
        description="tcp: port number (23 extron, 5000 kramer, 4001 ascii); "
        "serial: device path such as /dev/ttyUSB1",
    )
    baudrate: int = Field(9600, description="serial only")
    digits: int | None = Field(
        None,
        ge=1,
        le=3,
        description="zero-padding of input/output numbers "
        "(default: 2 for Extron, the width of most models; 1 for ascii)",
    )
    inputs: int | None = Field(None, ge=1, le=999, description="override the size the switcher reports")
    outputs: int | None = Field(None, ge=1, le=999)
    ascii: AsciiProfile = AsciiProfile()
    timeout_s: float = Field(1.0, gt=0, le=30, description="wait this long for each reply")
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    retries: int = Field(3, ge=1, le=10, description="attempts per route before giving up")
    backoff_s: float = Field(0.2, ge=0, le=10, description="first retry delay; doubles with jitter")
    reconnect_cap_s: float = Field(30.0, gt=0, le=600, description="longest wait between reconnects")
    poll_interval_s: float = Field(15.0, gt=0, le=3600, description="idle health check interval")

    @field_validator("baudrate")
    @classmethod
    def _baud(cls, v: int) -> int:
        if v not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
            raise ValueError("must be a standard rate: 1200 2400 4800 9600 19200 38400 57600 115200")
        return v

    @model_validator(mode="after")
    def _port_fits_backend(self) -> SwitcherConfig:
        if (
            self.backend == "tcp"
            and self.port is not None
            and not (isinstance(self.port, int) and 1 <= self.port <= 65535)
        ):
            raise ValueError(f'port = {self.port!r}: with backend = "tcp" the port is a number 1-65535')
        if self.backend == "serial" and not isinstance(self.port, str):
            raise ValueError('backend = "serial" needs port = "/dev/ttyUSB1" (the serial device path)')
        return self

    @property
    def tcp_port(self) -> int:
        return self.port if isinstance(self.port, int) else DEFAULT_TCP_PORT[self.protocol]
