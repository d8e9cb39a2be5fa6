"""The switcher's branch of the error tree (``kiosk_core.errors.DriverError``).

Every failure a caller of ``Switcher.route()`` can see is one of these; serial, socket and timeout
exceptions are translated in ``transport.py`` and ``driver.py`` and never escape.
"""

from __future__ import annotations

from kiosk_core.errors import DeviceMissing, DeviceTimeout, DriverError, ProtocolError


class SwitcherError(DriverError):
    """Root of switcher failures."""

    code = "switcher.error"


class SwitcherMissing(SwitcherError, DeviceMissing):
    """The switcher cannot be reached (port absent, connection refused or dropped)."""

    code = "switcher.missing"


class SwitcherTimeout(SwitcherError, DeviceTimeout):
    """The switcher was connected but did not answer in time."""

    code = "switcher.timeout"


class SwitcherGarbage(SwitcherError, ProtocolError):
    """The switcher answered bytes that are not a reply of its protocol."""

    code = "switcher.garbage"


class SwitcherRejected(SwitcherError):
    """The switcher answered with one of its own error codes (``E13``, ``ERR 003``...).

    ``device_code`` is the code as the switcher sent it; ``retryable`` says whether trying again can
    help (busy, timeout) or not (bad input number, unknown command); ``unsupported`` says the unit does
    not take that command at all (``E10``, ``ERR 002``), so the driver may learn its dialect again.
    """

    code = "switcher.rejected"

    def __init__(
        self,
        message: str,
        *,
        device_code: str,
        retryable: bool = False,
        bad_parameter: bool = False,
        unsupported: bool = False,
        device: str = "",
    ) -> None:
        super().__init__(message, device=device)
        self.device_code = device_code
        self.retryable = retryable
        self.bad_parameter = bad_parameter
        self.unsupported = unsupported


class RouteNotVerified(SwitcherError):
    """The switcher acknowledged a tie but reading the routing back shows something else."""

    code = "switcher.not_verified"


class RouteOutOfRange(SwitcherError, ValueError):
    """An input or output number outside what this switcher has (checked before sending)."""

    code = "switcher.out_of_range"
