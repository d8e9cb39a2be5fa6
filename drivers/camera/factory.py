"""Build the frame source a ``CameraConfig`` describes (the backend modules are imported on demand)."""

from __future__ import annotations

from drivers.camera.config import CameraConfig
from drivers.camera.source import FrameSource


def open_camera(name: str, cfg: CameraConfig, **kwargs: object) -> FrameSource:
    """A closed ``FrameSource`` for ``cfg``; call ``open()`` on it. ``kwargs`` go to ``FrameSource``."""
    if cfg.backend == "v4l2":
        from drivers.camera.v4l2 import V4l2Camera

        return V4l2Camera.from_config(name, cfg, **kwargs)
    if cfg.backend == "picamera2":
        from drivers.camera.picamera2 import Picamera2Camera

        return Picamera2Camera.from_config(name, cfg, **kwargs)
    from drivers.camera.synthetic import SyntheticCamera

    return SyntheticCamera.from_config(name, cfg, **kwargs)
