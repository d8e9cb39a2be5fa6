"""The SAM command layer: one request, one reply, over any ``Transport``. Blocking; no policy.

``SamLink.transact()`` sends a frame and waits for the reply, re-synchronising past noise, corrupted
frames and late answers to earlier commands on the way, and turns every way a reply can go wrong into
a typed error: ``NoReply`` (silence, or bytes that never form a frame), ``TruncatedFrame`` (a frame
that stopped), ``BadChecksum``/``BadLength`` (corruption) and ``SamStatusError`` subclasses (the SAM's
own SW3). Retry policy belongs to the driver.

Nothing here logs card data: replies are logged by status and size only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping

from drivers.card_reader import errors as e
from drivers.card_reader.protocol import (
    ADDRESS_SIZE,
    FINGERPRINT_MAX,
    HEADER_SIZE,
    MIN_RESPONSE_LEN,
    PHOTO_SIZE,
    SW3_CARD_FOUND,
    SW3_OK,
    TEXT_SIZE,
    CardBlocks,
    Command,
    FrameDecoder,
    SamRequest,
    SamResponse,
    format_sam_id,
    parse_card_blocks,
    parse_response,
    status_error,
)
from drivers.card_reader.transport import Transport

log = logging.getLogger("drivers.card_reader")

#: how long a reply of each command is at most (wire time is added to the reply timeout)
_REPLY_SIZE = {
    Command.READ_TEXT_PHOTO: HEADER_SIZE + 3 + 4 + TEXT_SIZE + PHOTO_SIZE + 1,
    Command.READ_TEXT_PHOTO_FINGERPRINT: HEADER_SIZE + 3 + 6 + TEXT_SIZE + PHOTO_SIZE + FINGERPRINT_MAX + 1,
    Command.READ_ADDITIONAL_ADDRESS: HEADER_SIZE + 3 + ADDRESS_SIZE + 1,
}
_SHORT_REPLY = HEADER_SIZE + 3 + 16 + 1
# Replies a command may legitimately get; anything else from a well-formed frame is a stale answer.
_FIND_ANSWERS = (SW3_CARD_FOUND, 0x80)
_READS = (Command.READ_TEXT_PHOTO, Command.READ_TEXT_PHOTO_FINGERPRINT)


#: The SAM's own time per command, before the reply's wire time is added. Public SAM drivers wait
#: 2 s for a text + photo read, 3 s for one with fingerprints and 1.5 s for the additional address
#: (YinanSoft ``com/YinanSoft/CardReaders/SerialReader.java``: ReadCardBase, ReadCardFinger,
#: ReadCardNewAddress); they give find/select 0.1 s and the SAM id 0.3 s, where 1 s is kept here.
DEFAULT_REPLY_TIMEOUTS = {"short": 1.0, "read": 2.0, "fingerprint": 3.0, "address": 1.5}
_BUDGET_OF = {
    Command.READ_TEXT_PHOTO: "read",
    Command.READ_TEXT_PHOTO_FINGERPRINT: "fingerprint",
    Command.READ_ADDITIONAL_ADDRESS: "address",
}


def wire_time(nbytes: int, baudrate: int) -> float:
    """Seconds to move ``nbytes`` over an 8N1 UART (10 bits per byte)."""
    return nbytes * 10 / baudrate


class SamLink:
    def __init__(
        self,
        transport: Transport,
        *,
        baudrate: int = 115200,
        reply_timeout_s: float | None = None,
        timeouts: Mapping[str, float] | None = None,
    ) -> None:
        """``timeouts`` sets the SAM's time per budget (``DEFAULT_REPLY_TIMEOUTS`` names them);
        ``reply_timeout_s`` alone sets every budget to one value (tests, benches)."""
        self.transport = transport
        self.baudrate = baudrate
        self.timeouts = dict(DEFAULT_REPLY_TIMEOUTS)
        if reply_timeout_s is not None:
            self.timeouts = dict.fromkeys(self.timeouts, reply_timeout_s)
        if timeouts:
            unknown = set(timeouts) - set(DEFAULT_REPLY_TIMEOUTS)
            if unknown:
                raise ValueError(
                    f"unknown reply budgets {sorted(unknown)}; known: {', '.join(DEFAULT_REPLY_TIMEOUTS)}"
                )
            self.timeouts |= timeouts
        self._decoder = FrameDecoder(min_len=MIN_RESPONSE_LEN)
        #: what went wrong on the wire so far, by error code (for health and diagnostics)
        self.stats: Counter[str] = Counter()

    @property
    def port(self) -> str:
        return self.transport.port

    def budget(self, command: Command) -> float:
        """Seconds ``transact(command)`` waits for the whole reply: the SAM's time for the command plus
        1.5x the wire time of its longest reply (a USB-serial adapter delivers in bursts), so a slower
        baud rate never eats into the SAM's own time."""
        size = _REPLY_SIZE.get(command, _SHORT_REPLY)
        return self.timeouts[_BUDGET_OF.get(command, "short")] + 1.5 * wire_time(size, self.baudrate)

    def _deadline(self, command: Command) -> float:
        return time.monotonic() + self.budget(command)

    def _next_body(self) -> tuple[bytes | None, e.FrameError | None]:
        """The next good frame body already buffered, and the last bad frame seen on the way."""
        bad: e.FrameError | None = None
        while True:  # bounded: every bad frame drops at least one byte from the buffer
            try:
                for body in self._decoder.frames():
                    return body, bad
                return None, bad
            except e.FrameError as exc:
                bad = exc
                self.stats[exc.code] += 1

    def transact(
        self, command: Command, data: bytes = b"", *, accept: Collection[int] = (SW3_OK,)
    ) -> SamResponse:
        """Send ``command`` and return its reply if SW3 is in ``accept``; typed errors otherwise."""
        request = SamRequest.of(command, data).encode()
        self._decoder.reset()
        # Bytes still in the input buffer belong to an earlier, abandoned exchange (a slow reply).
        self.transport.discard_input()
        self.transport.write(request)
        deadline = self._deadline(command)
        bad: e.FrameError | None = None
        skipped_before = self._decoder.skipped
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            chunk = self.transport.read_some(min(remaining, 0.1))
            if not chunk:
                continue
            self._decoder.feed(chunk)
            while True:  # bounded by the bytes buffered: each body found is consumed
                body, bad_here = self._next_body()
                bad = bad_here or bad
                if body is None:
                    break
                response = parse_response(body)
                if self._is_stale(command, response, accept):
                    # The answer to an earlier command that timed out: skip it, ours follows.
                    self.stats[e.UnexpectedReply.code] += 1
                    log.debug(
                        "card reader: skipped a late reply (SW3 0x%02X) while waiting for %s",
                        response.sw3,
                        command.label,
                    )
                    continue
                self._count_noise(skipped_before)
                return self._check(command, response, accept)
            if bad is not None and not self._decoder.pending:
                # A corrupted reply and nothing more on its way: fail now rather than at the deadline.
                self._count_noise(skipped_before)
                raise self._located(bad, command)
        self._count_noise(skipped_before)
        if self._decoder.in_frame:
            self.stats[e.TruncatedFrame.code] += 1
            raise e.TruncatedFrame(
                f"the card reader on {self.port} started a reply to {command.label} but "
                f"it stopped after {self._decoder.pending} bytes: check the cable and the "
                f"baud rate ({self.baudrate})"
            )
        if bad is not None:
            raise self._located(bad, command)
        self.stats[e.NoReply.code] += 1
        if self._decoder.skipped > skipped_before:
            raise e.NoReply(
                f"the card reader on {self.port} sends bytes that never form a frame (to "
                f"{command.label}): check that baudrate {self.baudrate} in [drivers.card_reader] "
                f"matches the reader (most use 115200), and the cable"
            )
        raise e.NoReply(
            f"no reply from the card reader on {self.port}: check the USB cable and that the "
            f"reader is powered (no answer to {command.label})"
        )

    def _located(self, exc: e.FrameError, command: Command) -> e.FrameError:
        """The decoder's error, saying which reader and which command (the decoder knows neither)."""
        return type(exc)(f"the card reader on {self.port} answered {command.label} with a bad frame: {exc}")

    def _count_noise(self, skipped_before: int) -> None:
        noise = self._decoder.skipped - skipped_before
        if noise:
            self.stats["noise_bytes"] += noise

    @staticmethod
    def _is_stale(command: Command, response: SamResponse, accept: Collection[int]) -> bool:
        """A success the command never answers with (``9F`` to a select, ``90`` to a find), or a read
        "success" too short to hold the blocks: the late answer to an earlier command."""
        if response.ok and response.sw3 not in accept:
            return True
        return command in _READS and response.sw3 == SW3_OK and len(response.data) < 4 + TEXT_SIZE

    def _check(self, command: Command, response: SamResponse, accept: Collection[int]) -> SamResponse:
        log.debug(
            "card reader %s -> SW3 0x%02X, %d data bytes", command.label, response.sw3, len(response.data)
        )
        if response.sw3 in accept:
            return response
        raise status_error(response.sw3, command)

    # --- the commands ----------------------------------------------------------------------------

    def reset_sam(self) -> None:
        self.transact(Command.RESET_SAM)

    def sam_status(self) -> None:
        """Returns when the SAM reports itself healthy; raises its SW3 error otherwise."""
        self.transact(Command.SAM_STATUS)

    def sam_id(self) -> str:
        return format_sam_id(self.transact(Command.SAM_ID).data)

    def find_card(self) -> bool:
        return self.transact(Command.FIND_CARD, accept=_FIND_ANSWERS).sw3 == SW3_CARD_FOUND

    def select_card(self) -> None:
        self.transact(Command.SELECT_CARD)

    def read_blocks(self, *, fingerprint: bool = False) -> CardBlocks:
        command = Command.READ_TEXT_PHOTO_FINGERPRINT if fingerprint else Command.READ_TEXT_PHOTO
        return parse_card_blocks(self.transact(command).data, with_fingerprint=fingerprint)

    def read_additional_address(self) -> bytes:
        """The additional-address block, or b"" when the card holds none (SW3 0x91)."""
        response = self.transact(Command.READ_ADDITIONAL_ADDRESS, accept=(SW3_OK, 0x91))
        if response.sw3 == 0x91:
            return b""
        if len(response.data) > ADDRESS_SIZE:
            raise e.BadLength(
                f"additional address reply has {len(response.data)} bytes, at most {ADDRESS_SIZE} expected"
            )
        return response.data

    def read_card(self, *, fingerprint: bool = False) -> CardBlocks:
        """find + select + read, once. The caller retries."""
        if not self.find_card():
            raise e.NoCard(f"no card on the card reader on {self.port}: place the card flat on the reader")
        self.select_card()
        return self.read_blocks(fingerprint=fingerprint)
