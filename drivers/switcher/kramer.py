"""Kramer Protocol 3000 for matrix switchers (host lines end in CR, device lines in CR LF).

=================================  =====================  ============================
handshake                          ``#``                  ``~01@ OK``
route input 1 to output 2, video   ``#VID 1>2``           ``~01@VID 1>2 OK``
audio only / audio and video       ``#AUD 1>2`` / ``#AV``  ``~01@AUD 1>2 OK``
read output 2's video              ``#VID? 2``            ``~01@VID 1>2`` (0: none)
inputs and outputs                 ``#INFO-IO?``          ``~01@INFO-IO IN 8,OUT 4``
error                                                     ``~01@VID ERR 003``
=================================  =====================  ============================

``01`` is the machine number set on the device (its DIP switches or web page); replies from any number
are accepted because a single device answers on its own port. Front-panel changes arrive unprompted
as ``~01@VID 3>2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.switcher.errors import SwitcherGarbage, SwitcherRejected
from drivers.switcher.protocol import (
    DeviceEmulation,
    DeviceInfo,
    Layer,
    Matrix,
    SwitcherProtocol,
    Tie,
    decode_line,
    shorten,
)


@dataclass(frozen=True)
class P3000Error:
    meaning: str
    retryable: bool = False
    bad_parameter: bool = False


# From the "Result and Error Codes" section of the Protocol 3000 manuals.
P3000_ERRORS: dict[str, P3000Error] = {
    "001": P3000Error("syntax error"),
    "002": P3000Error("command not available for this device"),
    "003": P3000Error("parameter out of range (no such input or output)", bad_parameter=True),
    "004": P3000Error("unauthorised access (log in with #LOGIN first)"),
    "005": P3000Error("internal firmware error"),
    "006": P3000Error("protocol busy", retryable=True),
    "007": P3000Error("wrong CRC"),
    "008": P3000Error("timeout", retryable=True),
    "010": P3000Error("not enough space for data"),
    "011": P3000Error("not enough space in the file system"),
    "012": P3000Error("file does not exist"),
    "013": P3000Error("file cannot be created"),
    "014": P3000Error("file cannot be opened"),
    "015": P3000Error("feature not supported"),
}

LAYER_CMD = {Layer.ALL: "AV", Layer.VIDEO: "VID", Layer.AUDIO: "AUD"}
CMD_LAYER = {v: k for k, v in LAYER_CMD.items()}

MESSAGE = re.compile(r"^~(\d{1,3})@(.*)$")
ERROR_BODY = re.compile(r"^(?:([A-Z][A-Z0-9?-]*) )?ERR ?(\d{3})$", re.IGNORECASE)
ROUTE_BODY = re.compile(r"^(AV|VID|AUD) (\d{1,3})>(\d{1,3})(?: (OK))?$", re.IGNORECASE)
INFO_BODY = re.compile(r"^INFO-IO IN (\d{1,3}),OUT (\d{1,3})$", re.IGNORECASE)


def rejected(code: str, command: str | None = None) -> SwitcherRejected:
    err = P3000_ERRORS.get(code)
    what = f" to {command}" if command else ""
    if err is None:
        return SwitcherRejected(
            f"switcher answered ERR {code}{what}, which is not in the Protocol 3000 "
            "error table (see the switcher's manual)",
            device_code=f"ERR {code}",
        )
    return SwitcherRejected(
        f"switcher answered ERR {code}{what}: {err.meaning}",
        device_code=f"ERR {code}",
        retryable=err.retryable,
        bad_parameter=err.bad_parameter,
    )


def _body(line: bytes) -> str | None:
    """The message body after ``~NN@``; None for an empty line; raises for errors and garbage."""
    text = decode_line(line)
    if not text:
        return None
    m = MESSAGE.match(text)
    if not m:
        raise SwitcherGarbage(f"not a Protocol 3000 reply (no ~NN@ prefix): {shorten(line)}")
    body = m.group(2).strip()
    if e := ERROR_BODY.match(body):
        raise rejected(e.group(2), e.group(1))
    return body


class KramerP3000(SwitcherProtocol):
    name = "kramer"
    title = "Kramer Protocol 3000"

    def identify_command(self) -> bytes:
        return b"#INFO-IO?\r"

    def parse_identify(self, line: bytes) -> DeviceInfo | None:
        try:
            body = _body(line)
        except SwitcherRejected as exc:
            if exc.device_code == "ERR 002":  # older firmware: no INFO-IO, but it is there and speaking
                return DeviceInfo()
            raise
        if body is None:
            return None
        if m := INFO_BODY.match(body):
            return DeviceInfo(inputs=int(m.group(1)), outputs=int(m.group(2)))
        return None

    def route_command(self, tie: Tie) -> bytes:
        return f"#{LAYER_CMD[tie.layer]} {tie.input}>{tie.output}\r".encode()

    def parse_route_reply(self, line: bytes, tie: Tie) -> bool:
        body = _body(line)
        if body is None:
            return False
        m = ROUTE_BODY.match(body)
        if m and m.group(4):
            return (CMD_LAYER[m.group(1).upper()], int(m.group(2)), int(m.group(3))) == (
                tie.layer,
                tie.input,
                tie.output,
            )
        return False  # a well-formed message about something else (front panel, another query)

    def query_command(self, output: int, layer: Layer) -> bytes:
        return f"#{LAYER_CMD[layer]}? {output}\r".encode()

    def parse_query_reply(self, line: bytes, output: int, layer: Layer) -> int | None:
        body = _body(line)
        if body is None:
            return None
        m = ROUTE_BODY.match(body)
        if m and not m.group(4) and CMD_LAYER[m.group(1).upper()] == layer and int(m.group(3)) == output:
            return int(m.group(2))
        return None


class KramerP3000Device(DeviceEmulation):
    """A Kramer matrix answering Protocol 3000, for the simulator."""

    def __init__(self, matrix: Matrix, *, machine: int = 1, model: str = "VS-84UT") -> None:
        super().__init__(matrix)
        self.prefix = f"~{machine:02d}@"
        self.model = model

    def _take_command(self) -> bytes | None:
        if self._buf[-1:] in (b"\r", b"\n"):
            cmd = bytes(self._buf[:-1]).strip()
            self._buf.clear()
            return cmd or None
        return None

    def _reply(self, body: str) -> bytes:
        return f"{self.prefix}{body}\r\n".encode()

    def error_reply(self, code: str | None, command: str | None = None) -> bytes:
        code = (code or "001").removeprefix("ERR").strip()
        return self._reply(f"{command} ERR {code}" if command else f"ERR {code}")

    def answer(self, command: bytes) -> tuple[bytes, Tie | None]:
        text = command.decode("ascii", "replace").strip()
        if text == "#":
            return self._reply("OK"), None
        if not text.startswith("#"):
            return self.error_reply("001"), None
        body = text[1:].upper()
        if m := re.fullmatch(r"(AV|VID|AUD) (\d{1,3})>(\d{1,3})", body):
            i, o = int(m.group(2)), int(m.group(3))
            if not (self.matrix.has_input(i) and self.matrix.has_output(o)):
                return self.error_reply("003", m.group(1)), None
            return self._reply(f"{m.group(1)} {i}>{o} OK"), Tie(i, o, CMD_LAYER[m.group(1)])
        if m := re.fullmatch(r"(VID|AUD)\? (\d{1,3})", body):
            o = int(m.group(2))
            if not self.matrix.has_output(o):
                return self.error_reply("003", m.group(1)), None
            return self._reply(f"{m.group(1)} {self.matrix.read(o, CMD_LAYER[m.group(1)])}>{o}"), None
        if body == "INFO-IO?":
            return self._reply(f"INFO-IO IN {self.matrix.inputs},OUT {self.matrix.outputs}"), None
        if body == "MODEL?":
            return self._reply(f"MODEL {self.model}"), None
        if re.fullmatch(r"[A-Z][A-Z0-9-]*\??(?: .*)?", body):
            return self.error_reply("002", body.split(" ")[0]), None
        return self.error_reply("001"), None
