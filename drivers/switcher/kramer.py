"""Kramer Protocol 3000 for matrix switchers (host lines end in CR, device lines in CR LF).

=================================  =====================  ============================
handshake                          ``#``                  ``~01@ OK``
route input 1 to output 2, video   ``#VID 1>2``           ``~01@VID 1>2 OK``
audio only / audio and video       ``#AUD 1>2`` / ``#AV``  ``~01@AUD 1>2 OK``
read output 2's video              ``#VID? 2``            ``~01@VID 1>2`` (0: none)
layer routing (video 1, audio 2)   ``#ROUTE 1,2,1``       ``~01@ROUTE 1,2,1``
read it back                       ``#ROUTE? 1,2``        ``~01@ROUTE 1,2,1``
inputs and outputs                 ``#INFO-IO?``          ``~01@INFO-IO IN 8,OUT 4``
error                                                     ``~01@VID ERR 003``
=================================  =====================  ============================

``01`` is the machine number set on the device (its DIP switches or web page); replies from any number
are accepted because a single device answers on its own port, and so are replies without it (``~VID
1>2 OK``: the manuals' syntax marks the address optional and older units leave it out). Front-panel
changes arrive unprompted as ``~01@VID 3>2``.

Firmware differs in what it answers (all accepted, see docs/drivers.md):

- a set command answered without `` OK`` (``~01@VID 2>4``: VS-1616DN-EM, VS-44DT);
- ``~01@AV 1>2`` to ``#VID``/``#AUD`` when the unit is in audio-follows-video mode (the tie moved both);
- ``#ROUTE`` only (``#VID`` answers ``ERR 002``): learned at connect by trying ``#VID? 1`` and then
  ``#ROUTE? 1,1``, and again when a route command is refused as not available.
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
    SetupStep,
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

#: codes that mean "this unit does not take that command" (the driver then learns its dialect again)
UNSUPPORTED = {"001", "002"}

LAYER_CMD = {Layer.ALL: "AV", Layer.VIDEO: "VID", Layer.AUDIO: "AUD"}
CMD_LAYER = {v: k for k, v in LAYER_CMD.items()}
#: ``#ROUTE`` layer numbers ("Layer Enumeration" of the Protocol 3000 manuals: 1 video, 2 audio)
ROUTE_LAYER = {Layer.VIDEO: 1, Layer.AUDIO: 2}
LAYER_OF_ROUTE = {v: k for k, v in ROUTE_LAYER.items()}

# The address ``NN@`` is optional (the manuals' "Address (optional)"; older units leave it out).
MESSAGE = re.compile(r"^~(?:(\d{1,3})@)?(.*)$")
# ``VID ERR 003`` and the long, echoing form ``VID 9>1 ERR 003``.
ERROR_BODY = re.compile(r"^(?:([A-Z][A-Z0-9?-]*)(?: [^ ]+)? )?ERR ?(\d{3})$", re.IGNORECASE)
ROUTE_BODY = re.compile(r"^(AV|VID|AUD) (\d{1,3})>(\d{1,3})(?: (OK))?$", re.IGNORECASE)
LAYER_BODY = re.compile(r"^ROUTE (\d{1,2}),(\d{1,3}),(\d{1,3})(?: (OK))?$", re.IGNORECASE)
INFO_BODY = re.compile(r"^INFO-IO IN (\d{1,3}),OUT (\d{1,3})$", re.IGNORECASE)
# "Device initiated messages: Start message": the unit's power-on line, without the ``~``.
START_MESSAGE = re.compile(r"^Kramer Electronics", re.IGNORECASE)


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
        unsupported=code in UNSUPPORTED,
    )


def _body(line: bytes) -> str | None:
    """The message body after ``~NN@``; None for an empty line; raises for errors and garbage."""
    text = decode_line(line)
    if not text or START_MESSAGE.match(text):
        return None
    m = MESSAGE.match(text)
    if not m:
        raise SwitcherGarbage(f"not a Protocol 3000 reply (no ~ or ~NN@ prefix): {shorten(line)}")
    body = m.group(2).strip()
    if e := ERROR_BODY.match(body):
        raise rejected(e.group(2), e.group(1))
    return body


class KramerP3000(SwitcherProtocol):
    name = "kramer"
    title = "Kramer Protocol 3000"

    def __init__(self) -> None:
        #: "vid" (``#VID``/``#AUD``/``#AV``, the default) or "route" (``#ROUTE`` only), learned at connect
        self.route_form = "vid"

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

    # --- the dialect: #VID or #ROUTE ---------------------------------------------------------------

    def setup_steps(self) -> list[SetupStep]:
        def vid(line: bytes) -> str | None:
            return "vid" if self._parse_vid_query(line, 1, Layer.VIDEO) is not None else None

        def route(line: bytes) -> str | None:
            return "route" if self._parse_route_query(line, 1, Layer.VIDEO) is not None else None

        return [
            SetupStep("route_form", b"#VID? 1\r", vid),
            SetupStep("route_form", b"#ROUTE? 1,1\r", route),
        ]

    def learn(self, topic: str, value: str) -> None:
        if topic == "route_form" and value in ("vid", "route"):
            self.route_form = value

    def forget(self) -> None:
        self.route_form = "vid"

    @property
    def dialect(self) -> dict[str, str]:
        return {"route_form": self.route_form}

    def route_ties(self, tie: Tie) -> list[Tie]:
        if self.route_form == "route" and tie.layer is Layer.ALL:
            return [Tie(tie.input, tie.output, plane) for plane in tie.layer.planes]
        return [tie]

    # --- routing -----------------------------------------------------------------------------------

    def route_command(self, tie: Tie) -> bytes:
        if self.route_form == "route" and tie.layer in ROUTE_LAYER:
            return f"#ROUTE {ROUTE_LAYER[tie.layer]},{tie.output},{tie.input}\r".encode()
        return f"#{LAYER_CMD[tie.layer]} {tie.input}>{tie.output}\r".encode()

    def parse_route_reply(self, line: bytes, tie: Tie) -> bool:
        body = _body(line)
        if body is None:
            return False
        if m := ROUTE_BODY.match(body):
            layer = CMD_LAYER[m.group(1).upper()]
            if (int(m.group(2)), int(m.group(3))) != (tie.input, tie.output):
                return False  # a front-panel change, or an answer to something else
            # With or without " OK" (VS-1616DN-EM firmware leaves it out); "AV" answers "#VID" and
            # "#AUD" in audio-follows-video mode, where the tie moved both layers.
            return layer is tie.layer or layer is Layer.ALL
        if m := LAYER_BODY.match(body):
            layer_no, dest, src = (int(g) for g in m.group(1, 2, 3))
            return (LAYER_OF_ROUTE.get(layer_no), dest, src) == (tie.layer, tie.output, tie.input)
        return False  # a well-formed message about something else (front panel, another query)

    def query_command(self, output: int, layer: Layer) -> bytes:
        if self.route_form == "route" and layer in ROUTE_LAYER:
            return f"#ROUTE? {ROUTE_LAYER[layer]},{output}\r".encode()
        return f"#{LAYER_CMD[layer]}? {output}\r".encode()

    def parse_query_reply(self, line: bytes, output: int, layer: Layer) -> int | None:
        got = self._parse_vid_query(line, output, layer)
        return got if got is not None else self._parse_route_query(line, output, layer)

    def _parse_vid_query(self, line: bytes, output: int, layer: Layer) -> int | None:
        body = _body(line)
        if body is None:
            return None
        m = ROUTE_BODY.match(body)
        if m and not m.group(4) and int(m.group(3)) == output:
            word = CMD_LAYER[m.group(1).upper()]
            if word is layer or word is Layer.ALL:  # "AV 1>2": audio follows video, both layers
                return int(m.group(2))
        return None

    def _parse_route_query(self, line: bytes, output: int, layer: Layer) -> int | None:
        body = _body(line)
        if body is None:
            return None
        m = LAYER_BODY.match(body)
        if m and not m.group(4):
            layer_no, dest, src = (int(g) for g in m.group(1, 2, 3))
            if LAYER_OF_ROUTE.get(layer_no) is layer and dest == output:
                return src
        return None


class KramerP3000Device(DeviceEmulation):
    """A Kramer matrix answering Protocol 3000, for the simulator.

    The firmware variants: ``ok=False`` answers a set command without `` OK`` (``~01@VID 2>4``),
    ``address=False`` leaves out the ``NN@`` (``~VID 2>4 OK``), ``afv=True`` is audio-follows-video mode
    (``#VID``/``#AUD`` move both and answer ``AV``), ``route_only=True`` takes ``#ROUTE`` and answers
    ``ERR 002`` to ``#VID``/``#AUD``/``#AV``.
    """

    def __init__(
        self,
        matrix: Matrix,
        *,
        machine: int = 1,
        model: str = "VS-84UT",
        ok: bool = True,
        address: bool = True,
        afv: bool = False,
        route_only: bool = False,
    ) -> None:
        super().__init__(matrix)
        self.machine = machine
        self.model = model
        self.ok, self.address, self.afv, self.route_only = ok, address, afv, route_only

    @property
    def prefix(self) -> str:
        return f"~{self.machine:02d}@" if self.address else "~"

    def notice(self) -> bytes:
        # "Device initiated messages: Start message", as after a reboot of the unit.
        return f"Kramer Electronics LTD., {self.model}, Version 1.05\r\n".encode()

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
        ok = " OK" if self.ok else ""
        if m := re.fullmatch(r"(AV|VID|AUD) (\d{1,3})>(\d{1,3})", body):
            if self.route_only:
                return self.error_reply("002", m.group(1)), None
            i, o = int(m.group(2)), int(m.group(3))
            if not (self.matrix.has_input(i) and self.matrix.has_output(o)):
                return self.error_reply("003", m.group(1)), None
            word = "AV" if self.afv else m.group(1)
            return self._reply(f"{word} {i}>{o}{ok}"), Tie(i, o, CMD_LAYER[word])
        if m := re.fullmatch(r"(VID|AUD)\? (\d{1,3})", body):
            if self.route_only:
                return self.error_reply("002", m.group(1)), None
            o = int(m.group(2))
            if not self.matrix.has_output(o):
                return self.error_reply("003", m.group(1)), None
            word = "AV" if self.afv else m.group(1)
            return self._reply(f"{word} {self.matrix.read(o, CMD_LAYER[m.group(1)])}>{o}"), None
        if m := re.fullmatch(r"ROUTE (\d{1,2}), ?(\d{1,3}), ?(\d{1,3})", body):
            layer_no, o, i = (int(g) for g in m.group(1, 2, 3))
            layer = LAYER_OF_ROUTE.get(layer_no)
            if layer is None or not (self.matrix.has_input(i) and self.matrix.has_output(o)):
                return self.error_reply("003", "ROUTE"), None
            return self._reply(f"ROUTE {layer_no},{o},{i}{ok}"), Tie(i, o, layer)
        if m := re.fullmatch(r"ROUTE\? (\d{1,2}), ?(\d{1,3})", body):
            layer_no, o = int(m.group(1)), int(m.group(2))
            layer = LAYER_OF_ROUTE.get(layer_no)
            if layer is None or not self.matrix.has_output(o):
                return self.error_reply("003", "ROUTE"), None
            return self._reply(f"ROUTE {layer_no},{o},{self.matrix.read(o, layer)}"), None
        if body == "INFO-IO?":
            return self._reply(f"INFO-IO IN {self.matrix.inputs},OUT {self.matrix.outputs}"), None
        if body == "MODEL?":
            return self._reply(f"MODEL {self.model}"), None
        if re.fullmatch(r"[A-Z][A-Z0-9-]*\??(?: .*)?", body):
            return self.error_reply("002", body.split(" ")[0]), None
        return self.error_reply("001"), None
