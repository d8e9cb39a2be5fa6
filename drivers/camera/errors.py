"""Camera errors: a sub-root under ``DriverError``; FFmpeg/PyAV errors are translated here, once."""

from __future__ import annotations

import errno

from kiosk_core.errors import DeviceMissing, DeviceTimeout, DriverError


class CameraError(DriverError):
    code = "camera.error"


class CameraMissing(CameraError, DeviceMissing):
    code = "camera.missing"


class CameraTimeout(CameraError, DeviceTimeout):
    code = "camera.timeout"


class CameraBusy(CameraError):
    code = "camera.busy"


class CameraModeError(CameraError, ValueError):
    """The camera refused the asked format, size or rate (or a filtergraph is invalid)."""

    code = "camera.mode"


def translate(exc: BaseException, *, device: str, what: str) -> CameraError:
    """One place where ``av``/OS errors become camera errors with a message a technician can act on."""
    err = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, CameraError):
        return exc
    if isinstance(exc, FileNotFoundError) or err in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return CameraMissing(
            f"{what}: no camera at {device}: check the USB cable and `ls /dev/video*`", device=device
        )
    if isinstance(exc, PermissionError) or err in (errno.EACCES, errno.EPERM):
        return CameraError(
            f"{what}: no permission to open {device}: add the kiosk user to group 'video'", device=device
        )
    if err == errno.EBUSY:
        return CameraBusy(f"{what}: {device} is in use by another program (fuser -v {device})", device=device)
    if isinstance(exc, TimeoutError) or err in (errno.ETIMEDOUT, errno.EAGAIN):
        return CameraTimeout(
            f"{what}: {device} sent no frame in time: check the cable and the USB power", device=device
        )
    if err == errno.EIO:
        return CameraMissing(
            f"{what}: I/O error on {device}: the camera was probably unplugged", device=device
        )
    if err == errno.EINVAL:
        return CameraModeError(
            f"{what}: {device} refused the mode: {text} (see `kiosk media probe {device}`)", device=device
        )
    return CameraError(f"{what}: {device}: {type(exc).__name__}: {text}", device=device)


class CameraOptionError(CameraError, ValueError):
    """An ``options`` entry the backend does not know, or a value it cannot take."""

    code = "camera.option"
