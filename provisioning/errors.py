"""The errors of device provisioning: one root, a stable code each, a message a technician can act on."""

from __future__ import annotations

from kiosk_core.errors import KioskError


class ProvisioningError(KioskError, ValueError):
    """Something the technician gave (a flag, a file, a field of the wizard) cannot be used. Nothing has
    been written when it is raised by a step's check."""

    code = "provision.invalid"

    def __init__(self, problems: list[str] | str, *, code: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems), code=code)


class CertificateError(ProvisioningError):
    """The CA or the device certificate does not fit this device (other key, expired, other CA)."""

    code = "provision.certificate"


class NotWritable(ProvisioningError, OSError):
    """A directory the files must go to cannot be written (read-only filesystem, permissions)."""

    code = "provision.not_writable"
