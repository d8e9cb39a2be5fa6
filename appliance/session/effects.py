"""What the session machine asks its caller to do: the ``Effect`` values returned by every input.

The machine performs no I/O; ``SessionService`` carries these out (record a fleet event, run the
document camera, keep or drop stored images, wipe a session, run a self-test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Emit:
    """Record a durable fleet event."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class CaptureDocument:
    """Ask the document camera for a picture; answer with ``capture_finished(attempt, ...)``."""

    session_id: str
    doc_id: str
    attempt: int


@dataclass(frozen=True)
class KeepCapture:
    """The villager accepted the pending capture of ``doc_id``: it becomes the document's image."""

    session_id: str
    doc_id: str


@dataclass(frozen=True)
class DropCapture:
    """Forget the pending (not accepted) capture of ``doc_id``."""

    session_id: str
    doc_id: str


@dataclass(frozen=True)
class DropDocument:
    """Forget the accepted image of ``doc_id`` (the item changed and no longer needs it)."""

    session_id: str
    doc_id: str


@dataclass(frozen=True)
class WipeSession:
    """Delete everything stored for the session (images, keys)."""

    session_id: str


@dataclass(frozen=True)
class StartCall:
    """Ask kiosk-media to carry the call's media (``media``: the platform's CallTarget)."""

    session_id: str
    media: dict[str, Any]


@dataclass(frozen=True)
class StopCall:
    """The call with the clerk is over: kiosk-media hangs up."""

    session_id: str


@dataclass(frozen=True)
class Signal:
    """Tell the kiosk's own parts something (the buzzer, the card reader): an in-process event that is
    not durable and never leaves the device (``ctx.emit(..., durable=False)``)."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class PrintReceipt:
    """Print ``receipt`` (``drivers.printer.protocol.Receipt``'s fields, masked name only) on the
    receipt printer; answer with ``print_finished(session_id, job, status, code)``. ``job``: receipt
    (approved) or appointment (booked)."""

    session_id: str
    job: str
    receipt: dict[str, Any]


@dataclass(frozen=True)
class RunSelfTest:
    peripheral: str


@dataclass(frozen=True)
class RefreshTechnician:
    """Collect device status for the technician screen and call ``set_technician_status``."""


Effect = (
    Emit
    | CaptureDocument
    | KeepCapture
    | DropCapture
    | DropDocument
    | WipeSession
    | StartCall
    | StopCall
    | Signal
    | PrintReceipt
    | RunSelfTest
    | RefreshTechnician
)
