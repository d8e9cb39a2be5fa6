"""Extron SIS (Simple Instruction Set) for matrix switchers, as in the CrossPoint/DXP/MAV manuals.

Wire format (ASCII, no terminator needed on commands; replies end in CR LF):

==============================  ====================  ===========================
tie input 1 to output 2, A+V    ``1*2!``              ``Out02 In01 All``
video only / audio only         ``1*2%`` / ``1*2$``   ``Out02 In01 Vid`` / ``Aud``
read output 2's video / audio   ``2%`` / ``2$``       ``01`` (``00``: untied)
information (matrix size)       ``I``                 ``V8X4 A8X4``
error                                                 ``E01`` ... ``E28``
==============================  ====================  ===========================

Numbers are zero-padded to the model's width: 2 digits on most models (``Out02``), 3 on the large
frames (``Out002``), none on small switchers. The switcher also talks unprompted: a copyright banner
on connect or power-on (its clock line as ``Sat, 21 Nov 2026 08:00:00`` or, on other firmware,
``Fri, Feb 13, 2009, 23:31:30``), a tie line whenever someone presses the front panel, and in verbose
modes 1 and 3 notices such as ``HplgO02`` (hot plug on output 2), ``02Vmt1`` / ``Vmt02*1`` (video mute),
``Reconfig``, ``Sig 1 0 1 1``.

Verbose mode (``W3CV`` sets 3, answered ``Vrb3``) is set at connect. In modes 2 and 3 the switcher
answers a read in the tagged form (``2%`` -> ``Out02 In01 Vid``); both forms are read, so a unit that
refuses the command (``E10`` on old firmware) or is switched to another mode still works.

The wire-level bits (commands, the tie/read/error/verbose/``Sig`` lines) live in ``sis_wire``, a pure
MicroPython-valid module the failover arbiter's firmware shares; this module adds the driver's model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.switcher import sis_wire
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
    pad,
    shorten,
)


@dataclass(frozen=True)
class SisError:
    meaning: str
    #: trying again may help (the switcher was busy or timed out)
    retryable: bool = False
    #: the request named an input/output/value the switcher does not have
    bad_parameter: bool = False


# From the SIS chapters of the Extron matrix switcher manuals.
SIS_ERRORS: dict[str, SisError] = {
    "E01": SisError("invalid input number (larger than the switcher has)", bad_parameter=True),
    "E06": SisError("invalid input change (auto-switch mode is active)"),
    "E09": SisError("invalid function or mode parameter", bad_parameter=True),
    "E10": SisError("invalid command"),
    "E11": SisError("invalid preset number", bad_parameter=True),
    "E12": SisError("invalid output number (larger than the switcher has)", bad_parameter=True),
    "E13": SisError("invalid value (out of range)", bad_parameter=True),
    "E14": SisError("command not valid for this configuration"),
    "E17": SisError("timeout or command invalid for the signal type", retryable=True),
    "E18": SisError("system timed out", retryable=True),
    "E21": SisError("invalid room number", bad_parameter=True),
    "E22": SisError("busy", retryable=True),
    "E24": SisError("privilege violation (log in with the administrator password)"),
    "E25": SisError("device not present"),
    "E26": SisError("maximum number of connections exceeded", retryable=True),
    "E27": SisError("invalid event number", bad_parameter=True),
    "E28": SisError("bad file name or file not found"),
}

LAYER_CHAR = {layer: sis_wire.LAYER_CHAR[layer.value] for layer in Layer}
LAYER_WORD = {Layer.ALL: "All", Layer.VIDEO: "Vid", Layer.AUDIO: "Aud"}
WORD_LAYER = {"All": Layer.ALL, "Vid": Layer.VIDEO, "RGB": Layer.VIDEO, "Aud": Layer.AUDIO}

#: the code that means "this unit does not take that command"
UNSUPPORTED = {"E10"}
VERBOSE_COMMAND = sis_wire.VERBOSE_COMMAND

INFO_REPLY = re.compile(r"^V(\d{1,3})X(\d{1,3})(?: +A(\d{1,3})X(\d{1,3}))?")
# Messages the switcher sends on its own; never an answer to what we asked.
UNSOLICITED = re.compile(
    r"^(?:\(c\) ?Copyright.*"
    # the banner's clock line, both forms: "Sat, 21 Nov 2026 08:00:00", "Fri, Feb 13, 2009, 23:31:30"
    r"|[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} [\d:]+|[A-Z][a-z]{2}, [A-Z][a-z]{2} \d{1,2}, \d{4}, [\d:]+"
    r"|Reconfig|Qik|Login (?:Administrator|User)|Vrb[0-3]"
    r"|(?:Sig|Vmt|Amt|Exe|Spr|Rpr|Frz|Vol|Aud)(?![A-Za-z]).*"
    # notices keyed by a port: hot plug "HplgO02" / "HplgO02*1", HDCP, screen saver, "02Vmt1" mutes
    r"|(?:Hplg[IO]|HdcpI|HdcpO|SsavS)[\d* ]*|\d{1,3} ?(?:Vmt|Amt|HdcpO)[\d* ]*"
    r"|In\d{1,3} +(?:All|Vid|Aud|RGB))$",
    re.IGNORECASE,
)


def rejected(code: str) -> SwitcherRejected:
    err = SIS_ERRORS.get(code)
    if err is None:
        return SwitcherRejected(
            f"switcher answered {code}, which is not in the SIS error table (see the switcher's manual)",
            device_code=code,
        )
    return SwitcherRejected(
        f"switcher answered {code}: {err.meaning}",
        device_code=code,
        retryable=err.retryable,
        bad_parameter=err.bad_parameter,
        unsupported=code in UNSUPPORTED,
    )


class ExtronSis(SwitcherProtocol):
    name = "extron"
    title = "Extron SIS"

    def __init__(self, digits: int = 2) -> None:
        self.digits = digits
        #: the verbose mode the unit confirmed at connect (None: it did not say)
        self.verbose: int | None = None

    def identify_command(self) -> bytes:
        return b"I"

    def setup_steps(self) -> list[SetupStep]:
        return [SetupStep("verbose", VERBOSE_COMMAND, self.parse_verbose_reply)]

    def parse_verbose_reply(self, line: bytes) -> str | None:
        text = decode_line(line)
        self._common(text)
        if (mode := sis_wire.parse_verbose(text)) is not None:
            return str(mode)
        if not text or UNSOLICITED.match(text) or sis_wire.parse_tie(text):
            return None
        raise SwitcherGarbage(f"expected the verbose mode reply (Vrb3), got {shorten(line)}")

    def learn(self, topic: str, value: str) -> None:
        if topic == "verbose":
            self.verbose = int(value)

    def forget(self) -> None:
        self.verbose = None

    @property
    def dialect(self) -> dict[str, str]:
        return {"verbose": "unknown" if self.verbose is None else str(self.verbose)}

    def _common(self, text: str) -> None:
        """Raise for error codes and password prompts; return for unsolicited lines."""
        if sis_wire.parse_error(text):
            raise rejected(text)
        if text.lower().startswith("password"):
            raise SwitcherRejected(
                "switcher asks for a password: clear the SIS password on the switcher "
                "(passwords are not supported)",
                device_code="password",
            )

    def parse_identify(self, line: bytes) -> DeviceInfo | None:
        text = decode_line(line)
        self._common(text)
        m = INFO_REPLY.match(text)
        if m:
            return DeviceInfo(inputs=int(m.group(1)), outputs=int(m.group(2)))
        if not text or UNSOLICITED.match(text) or sis_wire.parse_tie(text):
            return None
        raise SwitcherGarbage(f"expected the size reply (V8X4 A8X4), got {shorten(line)}")

    def route_command(self, tie: Tie) -> bytes:
        return sis_wire.tie_command(tie.input, tie.output, self.digits, tie.layer.value)

    def parse_route_reply(self, line: bytes, tie: Tie) -> bool:
        text = decode_line(line)
        self._common(text)
        m = sis_wire.parse_tie(text)
        if m:
            return (m[0], m[1], WORD_LAYER[m[2]]) == (
                tie.output,
                tie.input,
                tie.layer,
            )
        if not text or UNSOLICITED.match(text):
            return False
        raise SwitcherGarbage(
            f"expected 'Out{pad(tie.output, self.digits)} In{pad(tie.input, self.digits)} "
            f"{LAYER_WORD[tie.layer]}', got {shorten(line)}"
        )

    def query_command(self, output: int, layer: Layer) -> bytes:
        return sis_wire.read_command(output, self.digits, layer.value)

    def parse_query_reply(self, line: bytes, output: int, layer: Layer) -> int | None:
        text = decode_line(line)
        self._common(text)
        # Just the number: "In05 All" is the unsolicited "input 5 to all outputs", not a read-back.
        n = sis_wire.parse_read(text)
        if n is not None:
            return n
        if m := sis_wire.parse_tie(text):
            # Verbose modes 2 and 3 tag the answer ("Out02 In01 Vid"). A front-panel tie of the same
            # output and layer reads the same and states the same fact: which input it shows now. An
            # "All" line is a tie report, never the answer to a one-layer read: skipped.
            if m[0] == output and WORD_LAYER[m[2]] is layer:
                return m[1]
            return None
        if not text or UNSOLICITED.match(text):
            return None
        raise SwitcherGarbage(f"expected an input number for output {output}, got {shorten(line)}")


class ExtronSisDevice(DeviceEmulation):
    """An Extron matrix answering SIS, for the simulator.

    Firmware variants: ``verbose`` is the mode a connection starts in (0-3; ``W3CV`` changes it unless
    ``takes_cv=False``, old firmware that answers ``E10``); ``clock="comma"`` sends the banner's clock
    line as ``Fri, Feb 13, 2009, 23:31:30``. In modes 2 and 3 reads answer tagged, in 1 and 3 the device
    sends ``notice()`` lines.
    """

    COMMAND_END = b"!%$&"
    NOTICES = (b"HplgO02\r\n", b"02Vmt1\r\n")

    def __init__(
        self,
        matrix: Matrix,
        *,
        digits: int = 2,
        model: str = "DXP 84 HDMI",
        verbose: int = 0,
        takes_cv: bool = True,
        clock: str = "rfc",
    ) -> None:
        super().__init__(matrix)
        self.digits = digits
        self.model = model
        self.verbose = verbose
        self.takes_cv = takes_cv
        self.clock = clock
        self._notices = 0

    def banner(self) -> bytes:
        date = "Fri, Feb 13, 2009, 23:31:30" if self.clock == "comma" else "Sat, 21 Nov 2026 08:00:00"
        return (
            f"(c) Copyright 2024, Extron Electronics, {self.model}, V1.05, 60-1494-01\r\n{date}\r\n"
        ).encode()

    def notice(self) -> bytes:
        if self.verbose not in (1, 3):
            return b""
        self._notices += 1
        return self.NOTICES[self._notices % len(self.NOTICES)]

    def signal_report(self, present: list[bool]) -> bytes:
        """The unsolicited ``Sig 1 0 1 1`` line when an input gains or loses its signal (verbose 1
        and 3 only; empty otherwise)."""
        return sis_wire.sig_line(present) if self.verbose in (1, 3) else b""

    def _take_command(self) -> bytes | None:
        last = self._buf[-1:]
        if (
            last
            and last in self.COMMAND_END
            or (len(self._buf) == 1 and self._buf.upper() in (b"I", b"Q", b"N"))
        ):
            cmd = bytes(self._buf)
            self._buf.clear()
            return cmd
        if last in (b"\r", b"\n", b"|"):
            # SIS needs no terminator; a bare line end is ignored, one after junk ends the junk. Esc/W
            # commands end in CR or "|".
            cmd = bytes(self._buf[:-1])
            self._buf.clear()
            return cmd or None
        return None

    def error_reply(self, code: str | None) -> bytes:
        return f"{code or 'E10'}\r\n".encode()

    def answer(self, command: bytes) -> tuple[bytes, Tie | None]:
        text = command.decode("ascii", "replace")
        d = self.digits
        if m := re.fullmatch(r"(\d{1,3})\*(\d{1,3})([!%$&])", text):
            i, o = int(m.group(1)), int(m.group(2))
            if not self.matrix.has_input(i):
                return self.error_reply("E01"), None
            if not self.matrix.has_output(o):
                return self.error_reply("E12"), None
            layer = {"!": Layer.ALL, "%": Layer.VIDEO, "&": Layer.VIDEO, "$": Layer.AUDIO}[m.group(3)]
            word = "RGB" if m.group(3) == "&" else LAYER_WORD[layer]
            return f"Out{pad(o, d)} In{pad(i, d)} {word}\r\n".encode(), Tie(i, o, layer)
        if m := re.fullmatch(r"(\d{1,3})([%$&])", text):
            o = int(m.group(1))
            if not self.matrix.has_output(o):
                return self.error_reply("E12"), None
            layer = Layer.AUDIO if m.group(2) == "$" else Layer.VIDEO
            i = self.matrix.read(o, layer)
            if self.verbose in (2, 3):  # tagged responses: a view answers like the set command
                return f"Out{pad(o, d)} In{pad(i, d)} {LAYER_WORD[layer]}\r\n".encode(), None
            return f"{pad(i, d)}\r\n".encode(), None
        if m := re.fullmatch(r"(?:W|\x1b)([0-3]?)CV", text, re.IGNORECASE):
            if not self.takes_cv:
                return self.error_reply("E10"), None
            if m.group(1):
                self.verbose = int(m.group(1))
                return f"Vrb{self.verbose}\r\n".encode(), None
            return (
                f"Vrb{self.verbose}" if self.verbose in (2, 3) else f"{self.verbose}"
            ).encode() + b"\r\n", None
        upper = text.upper()
        if upper == "I":
            n_in, n_out = self.matrix.inputs, self.matrix.outputs
            return f"V{n_in}X{n_out} A{n_in}X{n_out}\r\n".encode(), None
        if upper == "Q":
            return b"1.05\r\n", None
        if upper == "N":
            return b"60-1494-01\r\n", None
        return self.error_reply("E10"), None
