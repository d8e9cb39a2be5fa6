"""What every switcher protocol offers, in both directions, as pure functions of bytes.

The host side (used by ``driver.Switcher``) turns a ``Tie`` into command bytes and classifies each
reply line: the awaited answer, an unsolicited message to skip (a front-panel change, a power-on
banner), a device error code (``SwitcherRejected``) or garbage (``SwitcherGarbage``). The device side
(used by ``simulator``) answers command bytes from a ``Matrix``; it is written from the vendors' manuals
so that the simulator and the fixtures in ``tests/fixtures/switcher/`` speak the same bytes as the
hardware.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from drivers.switcher.errors import SwitcherGarbage

#: a reply line longer than this is garbage, whatever it contains (real replies are < 80 bytes)
MAX_LINE = 256


class Layer(StrEnum):
    """Which signals a tie moves. ``ALL`` is video and audio together (Extron ``!``, Kramer ``AV``)."""

    ALL = "all"
    VIDEO = "video"
    AUDIO = "audio"

    @property
    def planes(self) -> tuple[Layer, ...]:
        """The layers a read-back has to look at: ``ALL`` is checked as video and audio."""
        return (Layer.VIDEO, Layer.AUDIO) if self is Layer.ALL else (self,)

    @classmethod
    def of(cls, *, video: bool, audio: bool) -> Layer:
        if video and audio:
            return cls.ALL
        if video:
            return cls.VIDEO
        if audio:
            return cls.AUDIO
        raise ValueError("a route must move video, audio or both")


@dataclass(frozen=True)
class Tie:
    """Input ``input`` shown on output ``output`` for ``layer``. Input 0 means untied."""

    input: int
    output: int
    layer: Layer = Layer.ALL


@dataclass(frozen=True)
class DeviceInfo:
    """What a switcher says about itself on the identify command (fields it does not tell are None)."""

    model: str | None = None
    inputs: int | None = None
    outputs: int | None = None


@dataclass
class Matrix:
    """The crosspoint state of a switcher (the simulator's "hardware"): per layer, output -> input."""

    inputs: int = 8
    outputs: int = 4
    ties: dict[Layer, dict[int, int]] = field(default_factory=lambda: {Layer.VIDEO: {}, Layer.AUDIO: {}})

    def has_input(self, n: int) -> bool:
        return 0 <= n <= self.inputs

    def has_output(self, n: int) -> bool:
        return 1 <= n <= self.outputs

    def apply(self, tie: Tie) -> None:
        for plane in tie.layer.planes:
            self.ties[plane][tie.output] = tie.input

    def read(self, output: int, layer: Layer) -> int:
        return self.ties[layer].get(output, 0)


@dataclass(frozen=True)
class SetupStep:
    """A command the driver sends after identify, to set how the switcher talks (Extron ``W3CV``) or to
    learn which commands it takes (Kramer ``#VID?`` or ``#ROUTE?``).

    ``parse`` returns the value the reply proves (handed to ``SwitcherProtocol.learn(topic, value)``),
    None for an unsolicited line to skip, and raises ``SwitcherRejected`` when the unit refuses the
    command. Steps of a topic are tried in order until one is answered; a refused step is not a fault.
    """

    topic: str
    command: bytes
    parse: Callable[[bytes], str | None]


def decode_line(line: bytes) -> str:
    """A reply line as text; raise ``SwitcherGarbage`` for bytes no switcher of ours sends."""
    if len(line) > MAX_LINE:
        raise SwitcherGarbage(f"reply line of {len(line)} bytes (longer than any switcher reply)")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError as exc:
        raise SwitcherGarbage(f"non-ASCII byte 0x{line[exc.start]:02x} in reply {shorten(line)}") from None
    if any(not (32 <= ord(c) < 127 or c == "\t") for c in text):
        raise SwitcherGarbage(f"control character in reply {shorten(line)}")
    return text.strip()


def shorten(data: bytes | str, limit: int = 40) -> str:
    """A reply as it may appear in an error message: quoted, escaped and cut."""
    text = repr(data if len(data) <= limit else data[:limit])
    return text + ("..." if len(data) > limit else "")


def pad(n: int, digits: int) -> str:
    return str(n).zfill(digits)


class SwitcherProtocol(ABC):
    """Host side of one protocol. Stateless apart from its settings; safe to share."""

    #: config name: extron | kramer | ascii
    name: str = ""
    #: the vendor-neutral name of the protocol for messages
    title: str = ""

    @abstractmethod
    def identify_command(self) -> bytes | None:
        """A harmless command that proves the switcher is there (None: use a read-back instead)."""

    @abstractmethod
    def parse_identify(self, line: bytes) -> DeviceInfo | None:
        """The answer to ``identify_command``; None for an unsolicited line to skip."""

    def setup_steps(self) -> list[SetupStep]:
        """Commands to run after identify on every connect (none by default)."""
        return []

    def learn(self, topic: str, value: str) -> None:
        """Adopt what a ``SetupStep`` proved (``topic`` and ``value`` as its ``parse`` returned)."""
        return None  # a protocol with no setup steps learns nothing

    def forget(self) -> None:
        """Back to the defaults before a new connection learns the unit again."""
        return None

    @property
    def dialect(self) -> dict[str, str]:
        """What was learned about this unit, for inventory and messages (empty: the defaults)."""
        return {}

    def route_ties(self, tie: Tie) -> list[Tie]:
        """The ties to send, one command and acknowledgement each, to make ``tie`` (most dialects move
        video and audio in one command; Kramer ``#ROUTE`` needs one per layer)."""
        return [tie]

    @abstractmethod
    def route_command(self, tie: Tie) -> bytes: ...

    @abstractmethod
    def parse_route_reply(self, line: bytes, tie: Tie) -> bool:
        """True when ``line`` acknowledges ``tie``; False for an unsolicited line to skip.

        Raises ``SwitcherRejected`` for a device error code and ``SwitcherGarbage`` for anything else.
        """

    @abstractmethod
    def query_command(self, output: int, layer: Layer) -> bytes:
        """Read which input is shown on ``output`` (``layer`` is VIDEO or AUDIO)."""

    @abstractmethod
    def parse_query_reply(self, line: bytes, output: int, layer: Layer) -> int | None:
        """The input tied to ``output`` (0: none); None for an unsolicited line to skip."""


class DeviceEmulation(ABC):
    """Device side of one protocol: bytes in, reply bytes out, against a ``Matrix``."""

    def __init__(self, matrix: Matrix) -> None:
        self.matrix = matrix
        self._buf = bytearray()

    def banner(self) -> bytes:
        """What the device sends when a host connects (empty for most)."""
        return b""

    def notice(self) -> bytes:
        """An unsolicited line the device sends on its own (hot plug, mute, start message); empty when
        this device or its current mode sends none."""
        return b""

    def feed(self, data: bytes) -> list[tuple[bytes, Tie | None]]:
        """Consume received bytes; return each complete command's reply and the tie it would make.

        The tie is returned rather than applied so that the simulator can inject the "acknowledged
        but not switched" fault; call ``matrix.apply`` to make it.
        """
        out = []
        for byte in data:
            self._buf.append(byte)
            command = self._take_command()
            if command is not None:
                out.append(self.answer(command))
            elif len(self._buf) > 64:
                self._buf.clear()
                out.append((self.error_reply(None), None))
        return out

    @abstractmethod
    def _take_command(self) -> bytes | None:
        """If the buffer holds a complete command, remove and return it."""

    @abstractmethod
    def answer(self, command: bytes) -> tuple[bytes, Tie | None]: ...

    @abstractmethod
    def error_reply(self, code: str | None) -> bytes:
        """The device's error answer (``code`` None: its "invalid command" code)."""
