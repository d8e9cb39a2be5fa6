"""The SAM serial protocol of resident ID card readers (身份证阅读机具): pure bytes in, values out.

Frame on the wire, both directions::

    AA AA AA 96 69 | LEN (2, big-endian) | body ... | CHK

``LEN`` counts the bytes after it, checksum included. ``CHK`` is the XOR of every byte from the first
``LEN`` byte to the last body byte. A request body is ``CMD PARA data``; a response body is
``SW1 SW2 SW3 data``. SW3 ``0x90`` means success, ``0x9F`` "card found"; every other value maps to a
typed error (``SW3_TABLE``).

``FrameDecoder`` turns a byte stream (with noise, partial frames and corrupted frames in it) into frame
bodies, re-synchronising on the preamble. The simulator uses the same functions in the other direction.
No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from drivers.card_reader import errors as e

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"
HEADER_SIZE = len(PREAMBLE) + 2  # preamble + LEN
#: The largest LEN we accept. A text+photo+fingerprint reply is 0x0908 (2312 B); anything far
#: beyond is a corrupted length field, and waiting for it would stall the link until timeout.
MAX_LEN = 0x0A00
MIN_REQUEST_LEN = 3  # CMD PARA CHK
MIN_RESPONSE_LEN = 4  # SW1 SW2 SW3 CHK

TEXT_SIZE = 256
PHOTO_SIZE = 1024
FINGERPRINT_MAX = 1024
ADDRESS_SIZE = 70


class Command(Enum):
    """(CMD, PARA) pairs of the SAM command set."""

    RESET_SAM = (0x10, 0xFF)
    SAM_STATUS = (0x11, 0xFF)
    SAM_ID = (0x12, 0xFF)
    FIND_CARD = (0x20, 0x01)
    SELECT_CARD = (0x20, 0x02)
    READ_TEXT_PHOTO = (0x30, 0x01)
    READ_TEXT_PHOTO_FINGERPRINT = (0x30, 0x10)
    READ_ADDITIONAL_ADDRESS = (0x30, 0x03)

    @property
    def cmd(self) -> int:
        return self.value[0]

    @property
    def para(self) -> int:
        return self.value[1]

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")

    @classmethod
    def lookup(cls, cmd: int, para: int) -> Command | None:
        return _COMMANDS.get((cmd, para))


_COMMANDS = {c.value: c for c in Command}

SW3_OK = 0x90
SW3_CARD_FOUND = 0x9F


@dataclass(frozen=True)
class Sw3:
    """One SW3 status: what it means and what a technician should do."""

    code: int
    meaning: str
    action: str
    error: type[e.SamStatusError] | None  # None for the success codes


SW3_TABLE: dict[int, Sw3] = {
    s.code: s
    for s in (
        Sw3(0x90, "success", "", None),
        Sw3(0x9F, "card found", "", None),
        Sw3(0x80, "no card on the reader", "place the card flat on the reader", e.NoCard),
        Sw3(
            0x81,
            "selecting the card failed",
            "hold the card still on the reader and try again",
            e.SelectFailed,
        ),
        Sw3(
            0x41,
            "reading the card failed",
            "hold the card still on the reader and try again; "
            "if every card fails, the reader's antenna needs service",
            e.ReadFailed,
        ),
        Sw3(
            0x10,
            "the reader received a frame with a bad checksum",
            "check the serial cable and for electrical noise near the reader",
            e.SamRejectedChecksum,
        ),
        Sw3(
            0x11,
            "the reader received a frame with a bad length",
            "check the serial cable and the baud rate",
            e.SamRejectedLength,
        ),
        Sw3(
            0x21,
            "the reader does not support this command",
            "check that the reader model is a SAM-based 身份证阅读机具 and its firmware version",
            e.SamRejectedCommand,
        ),
        Sw3(
            0x23,
            "operation not authorised",
            "the reader refuses the command; contact the reader's vendor",
            e.SamUnauthorised,
        ),
        Sw3(0x24, "unknown error in the reader", "power-cycle the reader", e.SamUnknownError),
        Sw3(
            0x31,
            "card authentication of the SAM failed",
            "the card may be damaged or forged; ask for another document",
            e.CardAuthenticationFailed,
        ),
        Sw3(
            0x32,
            "SAM authentication of the card failed",
            "the card may be damaged or forged; ask for another document",
            e.CardAuthenticationFailed,
        ),
        Sw3(
            0x33,
            "information verification failed",
            "the card data is inconsistent; ask for another document",
            e.CardAuthenticationFailed,
        ),
        Sw3(
            0x40,
            "unknown card type",
            "this is not a resident ID card or a permit the reader knows",
            e.UnknownCardType,
        ),
        Sw3(0x47, "random number error", "remove the card and present it again", e.RandomNumberError),
        Sw3(
            0x60,
            "the SAM module failed its self-test",
            "power-cycle the reader; if it persists the reader needs service",
            e.SamSelfTestFailed,
        ),
        Sw3(
            0x66,
            "the SAM module is not authorised",
            "the reader's SAM module is not licensed; contact the reader's vendor",
            e.SamNotAuthorised,
        ),
        Sw3(
            0x91,
            "the card holds no such content",
            "nothing to do: the card has no such record",
            e.NoSuchContent,
        ),
        Sw3(
            0xFF,
            "communication fault inside the reader",
            "power-cycle the reader and check its cable",
            e.CommunicationFault,
        ),
    )
}


def status_error(sw3: int, command: Command | None = None) -> e.SamStatusError:
    """The typed error for a failing SW3 (never call it with 0x90/0x9F)."""
    what = f" to {command.label}" if command else ""
    entry = SW3_TABLE.get(sw3)
    if entry is None or entry.error is None:
        return e.SamUnknownError(
            f"the card reader answered an unknown status 0x{sw3:02X}{what}: power-cycle "
            f"the reader; if it persists, check its model and firmware",
            sw3=sw3,
        )
    action = f": {entry.action}" if entry.action else ""
    return entry.error(f"card reader status 0x{sw3:02X}{what}, {entry.meaning}{action}", sw3=sw3)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """XOR of every byte (the caller passes LEN .. last body byte)."""
    x = 0
    for b in data:
        x ^= b
    return x


def encode_frame(body: bytes) -> bytes:
    """Wrap a body (request ``CMD PARA data`` or response ``SW1 SW2 SW3 data``) into a frame."""
    length = len(body) + 1
    if length > 0xFFFF:
        raise e.BadLength(f"frame body of {len(body)} bytes does not fit a 2-byte length")
    head = length.to_bytes(2, "big")
    return PREAMBLE + head + body + bytes([checksum(head + body)])


@dataclass(frozen=True)
class SamRequest:
    cmd: int
    para: int
    data: bytes = b""

    @property
    def command(self) -> Command | None:
        return Command.lookup(self.cmd, self.para)

    def encode(self) -> bytes:
        return encode_frame(bytes([self.cmd, self.para]) + self.data)

    @classmethod
    def of(cls, command: Command, data: bytes = b"") -> SamRequest:
        return cls(command.cmd, command.para, data)


@dataclass(frozen=True)
class SamResponse:
    sw1: int
    sw2: int
    sw3: int
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.sw3 in (SW3_OK, SW3_CARD_FOUND)

    def encode(self) -> bytes:
        return encode_frame(bytes([self.sw1, self.sw2, self.sw3]) + self.data)

    def __repr__(self) -> str:
        # The data of a read reply is a person's identity: never let it reach a log through repr().
        return f"SamResponse(sw=0x{self.sw1:02X}{self.sw2:02X}{self.sw3:02X}, data={len(self.data)} bytes)"


def parse_request(body: bytes) -> SamRequest:
    if len(body) < MIN_REQUEST_LEN - 1:
        raise e.BadLength(f"request body of {len(body)} bytes is shorter than CMD PARA")
    return SamRequest(body[0], body[1], bytes(body[2:]))


def parse_response(body: bytes) -> SamResponse:
    if len(body) < MIN_RESPONSE_LEN - 1:
        raise e.BadLength(
            f"reply body of {len(body)} bytes is shorter than SW1 SW2 SW3: check the cable and the baud rate"
        )
    return SamResponse(body[0], body[1], body[2], bytes(body[3:]))


def decode_frame(frame: bytes) -> bytes:
    """The body of exactly one complete frame; typed errors for anything else."""
    dec = FrameDecoder(min_len=1)
    dec.feed(frame)
    bodies = list(dec.frames())
    if len(bodies) != 1 or dec.pending:
        raise e.FrameError(f"expected exactly one frame in {len(frame)} bytes, found {len(bodies)}")
    return bodies[0]


class FrameDecoder:
    """Incremental decoder: ``feed()`` bytes, iterate ``frames()`` for complete bodies.

    Garbage before a preamble is skipped and counted. A frame whose checksum does not match, or whose
    length is impossible, raises ``BadChecksum``/``BadLength`` from ``frames()`` *after* dropping just the
    first preamble byte, so a good frame hidden inside the bad one is still found by the next call:
    the decoder re-synchronises by itself and never loses a good frame to a bad one before it.
    """

    def __init__(self, *, min_len: int = MIN_REQUEST_LEN, max_len: int = MAX_LEN) -> None:
        self._buf = bytearray()
        self.min_len = min_len
        self.max_len = max_len
        self.skipped = 0  # garbage bytes dropped while hunting for a preamble

    def feed(self, data: bytes) -> None:
        self._buf += data
        # Bound memory whatever arrives: a stream of garbage is discarded as we go.
        if len(self._buf) > 4 * (HEADER_SIZE + self.max_len):
            self._hunt()

    @property
    def pending(self) -> int:
        """Bytes held that may be the start of a frame (non-zero after a timeout = truncated frame)."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        return self._buf.startswith(PREAMBLE)

    def reset(self) -> None:
        self._buf.clear()

    def _hunt(self) -> None:
        """Drop bytes up to the next possible preamble start (a partial preamble at the end is kept)."""
        i = self._buf.find(PREAMBLE)
        if i < 0:
            # keep a tail that could be the start of a preamble split across reads
            keep = 0
            for k in range(min(len(PREAMBLE) - 1, len(self._buf)), 0, -1):
                if self._buf.endswith(PREAMBLE[:k]):
                    keep = k
                    break
            i = len(self._buf) - keep
        if i:
            self.skipped += i
            del self._buf[:i]

    def frames(self) -> Iterator[bytes]:
        while True:
            self._hunt()
            if len(self._buf) < HEADER_SIZE:
                return
            length = int.from_bytes(self._buf[5:7], "big")
            if length < self.min_len or length > self.max_len:
                del self._buf[0]
                self.skipped += 1
                raise e.BadLength(
                    f"frame length field {length} is outside {self.min_len}..{self.max_len}: "
                    f"check the reader's cable and the baud rate"
                )
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                return
            frame = bytes(self._buf[:end])
            if checksum(frame[5:-1]) != frame[-1]:
                del self._buf[0]
                self.skipped += 1
                raise e.BadChecksum(
                    f"frame of {end} bytes with a bad checksum (got 0x{frame[-1]:02X}, "
                    f"computed 0x{checksum(frame[5:-1]):02X}): check the reader's cable and "
                    f"for electrical noise near it"
                )
            del self._buf[:end]
            yield frame[HEADER_SIZE:-1]


# --- the payloads of particular replies ------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class CardBlocks:
    """The raw blocks of a read reply. Opaque personal data: no repr."""

    text: bytes
    photo: bytes
    fingerprint: bytes = b""

    def __repr__(self) -> str:
        return (
            f"CardBlocks(text={len(self.text)} B, photo={len(self.photo)} B, "
            f"fingerprint={len(self.fingerprint)} B)"
        )


def encode_card_blocks(blocks: CardBlocks, *, with_fingerprint: bool) -> bytes:
    """Data part of a ``30 01`` (or ``30 10``) reply."""
    head = len(blocks.text).to_bytes(2, "big") + len(blocks.photo).to_bytes(2, "big")
    if with_fingerprint:
        head += len(blocks.fingerprint).to_bytes(2, "big")
        return head + blocks.text + blocks.photo + blocks.fingerprint
    return head + blocks.text + blocks.photo


def parse_card_blocks(data: bytes, *, with_fingerprint: bool) -> CardBlocks:
    """Split a read reply's data into the text, photo (and fingerprint) blocks, checking every length."""
    nlen = 3 if with_fingerprint else 2
    if len(data) < 2 * nlen:
        raise e.BadLength(f"read reply has {len(data)} data bytes, too short for its length fields")
    text_len = int.from_bytes(data[0:2], "big")
    photo_len = int.from_bytes(data[2:4], "big")
    fp_len = int.from_bytes(data[4:6], "big") if with_fingerprint else 0
    if text_len != TEXT_SIZE:
        raise e.BadLength(f"read reply announces a text block of {text_len} bytes, expected {TEXT_SIZE}")
    if photo_len > PHOTO_SIZE or fp_len > FINGERPRINT_MAX:
        raise e.BadLength(
            f"read reply announces a photo of {photo_len} / fingerprint of {fp_len} bytes, "
            f"more than a card holds"
        )
    start = 2 * nlen
    if len(data) != start + text_len + photo_len + fp_len:
        raise e.BadLength(
            f"read reply holds {len(data) - start} block bytes but announces {text_len + photo_len + fp_len}"
        )
    text = data[start : start + text_len]
    photo = data[start + text_len : start + text_len + photo_len]
    fp = data[start + text_len + photo_len :]
    return CardBlocks(bytes(text), bytes(photo), bytes(fp))


def format_sam_id(data: bytes) -> str:
    """SAM id reply (16 bytes) as printed on the module's label: ``05.01-20101010-0011223344-1234567890``."""
    if len(data) != 16:
        raise e.BadLength(f"SAM id reply has {len(data)} data bytes, expected 16")
    a = int.from_bytes(data[0:2], "little")
    b = int.from_bytes(data[2:4], "little")
    c = int.from_bytes(data[4:8], "little")
    d = int.from_bytes(data[8:12], "little")
    f = int.from_bytes(data[12:16], "little")
    return f"{a:02d}.{b:02d}-{c:08d}-{d:010d}-{f:010d}"


def encode_sam_id(text: str) -> bytes:
    """Inverse of ``format_sam_id`` (the simulator's SAM id)."""
    ab, c, d, f = text.split("-")
    a, b = ab.split(".")
    return (
        int(a).to_bytes(2, "little")
        + int(b).to_bytes(2, "little")
        + int(c).to_bytes(4, "little")
        + int(d).to_bytes(4, "little")
        + int(f).to_bytes(4, "little")
    )
