"""Errors of the resident ID card reader, hung under ``kiosk_core.errors.DriverError``.

Two families:

* link errors, found by the firmware in the bytes on the wire (bad checksum, malformed or truncated
  frame, no reply, port gone);
* SAM status errors, reported by the reader itself in SW3 (``SamStatusError`` subclasses, one per code).

Every message says what happened and what a technician can do about it. No message ever carries
card data (names, numbers): errors end up in logs and in fleet events.
"""

from __future__ import annotations

from kiosk_core.errors import DeviceMissing, DeviceTimeout, DriverError, ProtocolError

DEVICE = "card_reader"


class CardReaderError(DriverError):
    """Root of every card reader error."""

    code = "card_reader.error"
    #: True when repeating the same operation may well succeed (line noise, a card moved mid-read).
    transient: bool = True

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, device=DEVICE, code=code)


# --- the link: bytes on the wire -----------------------------------------------------------------


class ReaderMissing(CardReaderError, DeviceMissing):
    """The serial port cannot be opened or vanished (USB unplugged)."""

    code = "card_reader.missing"


class NoReply(CardReaderError, DeviceTimeout):
    """Nothing (or nothing that forms a frame) arrived before the deadline."""

    code = "card_reader.no_reply"


class FrameError(CardReaderError, ProtocolError):
    """Bytes that are not a well-formed SAM frame."""

    code = "card_reader.frame"


class BadChecksum(FrameError):
    code = "card_reader.bad_checksum"


class BadLength(FrameError):
    code = "card_reader.bad_length"


class TruncatedFrame(FrameError, DeviceTimeout):
    """A frame started but its tail never arrived."""

    code = "card_reader.truncated"


class UnexpectedReply(FrameError):
    """A well-formed frame that cannot answer the command we sent: a late reply to an earlier one.
    ``SamLink`` skips such frames and counts them under this code rather than raising."""

    code = "card_reader.unexpected_reply"


# --- the card's contents -------------------------------------------------------------------------


class CardDataError(CardReaderError, ValueError):
    """The card's data block cannot be laid out at all (unknown card type, wrong block size)."""

    code = "card_reader.card_data"
    transient = False


# --- SW3: what the SAM module says -----------------------------------------------------------------


class SamStatusError(CardReaderError):
    """The reader answered with an SW3 status other than success. ``sw3`` holds the byte."""

    code = "card_reader.sam_status"
    sw3: int = 0x24

    def __init__(self, message: str, *, sw3: int | None = None) -> None:
        super().__init__(message)
        if sw3 is not None:
            self.sw3 = sw3


class NoCard(SamStatusError):
    code = "card_reader.no_card"
    sw3 = 0x80


class SelectFailed(SamStatusError):
    code = "card_reader.select_failed"
    sw3 = 0x81


class ReadFailed(SamStatusError):
    code = "card_reader.read_failed"
    sw3 = 0x41


class SamRejectedChecksum(SamStatusError):
    code = "card_reader.sam_checksum"
    sw3 = 0x10


class SamRejectedLength(SamStatusError):
    code = "card_reader.sam_length"
    sw3 = 0x11


class SamRejectedCommand(SamStatusError):
    code = "card_reader.sam_command"
    sw3 = 0x21
    transient = False


class SamUnauthorised(SamStatusError):
    code = "card_reader.unauthorised"
    sw3 = 0x23
    transient = False


class SamUnknownError(SamStatusError):
    code = "card_reader.sam_unknown"
    sw3 = 0x24


class CardAuthenticationFailed(SamStatusError):
    code = "card_reader.authentication"
    sw3 = 0x31


class UnknownCardType(SamStatusError):
    code = "card_reader.unknown_card_type"
    sw3 = 0x40
    transient = False


class RandomNumberError(SamStatusError):
    code = "card_reader.random_number"
    sw3 = 0x47


class SamSelfTestFailed(SamStatusError):
    code = "card_reader.sam_self_test"
    sw3 = 0x60
    transient = False


class SamNotAuthorised(SamStatusError):
    code = "card_reader.sam_not_authorised"
    sw3 = 0x66
    transient = False


class NoSuchContent(SamStatusError):
    code = "card_reader.no_such_content"
    sw3 = 0x91
    transient = False


class CommunicationFault(SamStatusError):
    code = "card_reader.communication"
    sw3 = 0xFF


class UsbUnavailable(CardReaderError):
    """USB readers cannot be used on this system as configured: pyusb or libusb-1.0 is missing, or the
    configured interface has no usable endpoints. Not a cable problem: health is degraded, not missing."""

    code = "card_reader.usb_unavailable"
    transient = False
