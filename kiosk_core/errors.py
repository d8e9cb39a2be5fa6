"""The one error tree of the firmware.

Every error carries a stable ``code`` (for logs, replies and tests) and a message a technician can act
on. Subsystems hang their own sub-root here; leaves may also inherit a built-in (``ValueError``,
``TimeoutError``) so generic callers can still catch them. Foreign exceptions (paho, serial, av,
sqlite) are translated once at the boundary that meets them and are never seen by the core.
"""

from __future__ import annotations


class KioskError(Exception):
    """Root of every error the firmware raises on purpose."""

    code: str = "kiosk.error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


# --- configuration -------------------------------------------------------------------------------


class ConfigError(KioskError, ValueError):
    """A configuration file or pushed config is unusable. ``problems`` lists every located issue."""

    code = "config.invalid"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the configuration:\n{lines}")


# --- storage -------------------------------------------------------------------------------------


class StorageError(KioskError, OSError):
    code = "storage.error"


class OutboxFull(StorageError):
    code = "storage.outbox_full"


# --- MQTT / fleet link / local bus ---------------------------------------------------------------


class LinkError(KioskError):
    code = "link.error"


class NotConnected(LinkError, ConnectionError):
    code = "link.not_connected"


class PublishFailed(LinkError):
    code = "link.publish_failed"


# --- commands ------------------------------------------------------------------------------------


class CommandError(KioskError):
    """Raised by a command handler to answer with a status other than 200.

    ``status`` is one of the contract's codes: 400 malformed, 404 unknown, 409 conflicting state,
    410 expired, 500 failed, 503 unavailable. ``detail`` is merged into the reply body.
    """

    code = "command.failed"

    def __init__(self, status: int, message: str, **detail: object) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class BadRequest(CommandError, ValueError):
    code = "command.bad_request"

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(400, message, **detail)


class Conflict(CommandError):
    code = "command.conflict"

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(409, message, **detail)


# --- drivers (sub-roots per device kind live in drivers/*/errors.py and inherit this) --------------


class DriverError(KioskError):
    """A peripheral failed. ``device`` names it for the technician (e.g. ``card_reader``)."""

    code = "driver.error"

    def __init__(self, message: str, *, device: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.device = device


class DeviceMissing(DriverError, ConnectionError):
    code = "driver.missing"


class DeviceTimeout(DriverError, TimeoutError):
    code = "driver.timeout"


class ProtocolError(DriverError, ValueError):
    """A device answered bytes that do not follow its protocol."""

    code = "driver.protocol"


# --- media ---------------------------------------------------------------------------------------


class MediaError(KioskError):
    code = "media.error"


# --- session -------------------------------------------------------------------------------------


class SessionError(KioskError):
    code = "session.error"


# --- firmware updates (OTA) ----------------------------------------------------------------------


class OtaError(KioskError):
    """A firmware update could not go on. ``stage`` says where: download, verify, install, health."""

    code = "ota.error"

    def __init__(self, message: str, *, stage: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.stage = stage


class UpdaterUnavailable(OtaError, ConnectionError):
    """No update service (RAUC) answers on the configured D-Bus: updates cannot run on this machine."""

    code = "ota.unavailable"


class UpdaterFailed(OtaError):
    """The update service answered a call with an error (``dbus_name`` is the D-Bus error name)."""

    code = "ota.updater_failed"

    def __init__(self, message: str, *, dbus_name: str = "", stage: str = "") -> None:
        super().__init__(message, stage=stage)
        self.dbus_name = dbus_name
