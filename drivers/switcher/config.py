"""``[drivers.switcher]``: which HDMI/AV matrix, over which wire, speaking which protocol."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kiosk_core.config import Strict

DEFAULT_TCP_PORT = {"extron": 23, "kramer": 5000, "ascii": 4001}
TEMPLATE_CHARS = re.compile(r"^[\x20-\x7e]+$")
#: groups of a reply regex that the driver reads as numbers
NUMBER_GROUPS = ("input", "output")
#: firmware variants the simulator can play (``sim_firmware``, ``kiosk sim fault switcher NAME``)
SIM_FIRMWARE = {
    "kramer": ("no-ok", "av", "no-addr", "route"),
    "extron": ("vrb0", "vrb1", "vrb2", "vrb3", "no-cv", "date2"),
    "ascii": (),
}


def non_numeric_groups(pattern: str) -> list[str]:
    """The groups of ``NUMBER_GROUPS`` in ``pattern`` that can match something other than 1+ digits.

    Read from the compiled pattern's parse tree, so ``(?P<input>\\d+)``, ``(?P<input>[0-9]{1,3})`` and
    ``(?P<input>0?\\d|1[0-6])`` pass and ``(?P<input>\\w+)``, ``(?P<input>.*)``, ``(?P<input>\\d*)`` do not.
    """
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser as sre  # type: ignore[attr-defined]

    def digits_only(items: object) -> bool:
        for op, arg in items:  # type: ignore[attr-defined]
            if op is c.LITERAL:
                if not 48 <= arg <= 57:
                    return False
            elif op is c.IN:
                for sub_op, sub_arg in arg:
                    if sub_op is c.CATEGORY and sub_arg is c.CATEGORY_DIGIT:
                        continue
                    if sub_op is c.LITERAL and 48 <= sub_arg <= 57:
                        continue
                    if sub_op is c.RANGE and 48 <= sub_arg[0] <= sub_arg[1] <= 57:
                        continue
                    return False
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                if not digits_only(arg[2]):
                    return False
            elif op is c.SUBPATTERN:
                if not digits_only(arg[3]):
                    return False
            elif op is c.BRANCH:
                if not all(digits_only(branch) for branch in arg[1]):
                    return False
            else:  # any, categories other than digits, anchors, lookarounds, backreferences
                return False
        return True

    bad: list[str] = []

    def walk(items: object) -> None:
        for op, arg in items:  # type: ignore[attr-defined]
            if op is c.SUBPATTERN:
                group, body = arg[0], arg[3]
                name = names.get(group)
                if name in NUMBER_GROUPS and (not digits_only(body) or body.getwidth()[0] < 1):
                    bad.append(name)
                walk(body)
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                walk(arg[2])
            elif op is c.BRANCH:
                for branch in arg[1]:
                    walk(branch)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                walk(arg[1])

    tree = sre.parse(pattern)
    names = {v: k for k, v in tree.state.groupdict.items()}
    walk(tree)
    return bad


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

    @field_validator("route_reply", "query_reply")
    @classmethod
    def _number_groups(cls, v: str) -> str:
        if bad := non_numeric_groups(v):
            names = " and ".join(f"(?P<{name}>...)" for name in bad)
            raise ValueError(
                f"group {names} must match digits only, at least one (as (?P<{bad[0]}>\\d+)): "
                "the driver reads it as a number"
            )
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
    sim_firmware: list[str] = Field(
        default_factory=list,
        max_length=8,
        description='backend = "sim": firmware variants the simulated switcher plays '
        "(kramer: no-ok, av, no-addr, route; extron: vrb0-vrb3, no-cv, date2)",
    )

    @field_validator("baudrate")
    @classmethod
    def _baud(cls, v: int) -> int:
        if v not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
            raise ValueError("must be a standard rate: 1200 2400 4800 9600 19200 38400 57600 115200")
        return v

    @model_validator(mode="after")
    def _sim_firmware_fits_protocol(self) -> SwitcherConfig:
        allowed = SIM_FIRMWARE[self.protocol]
        for name in self.sim_firmware:
            if name not in allowed:
                raise ValueError(
                    f"sim_firmware {name!r} is not a {self.protocol} variant: "
                    f"one of {', '.join(allowed) or '(none for this protocol)'}"
                )
        return self

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
