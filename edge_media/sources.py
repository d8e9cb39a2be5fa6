"""Source SPECs: a configured camera name, a V4L2 device path, or ``lavfi:<filtergraph>``."""

from __future__ import annotations

import re
from collections.abc import Mapping

from drivers.camera.config import CameraConfig
from drivers.camera.factory import open_camera
from drivers.camera.source import FrameSource
from drivers.camera.synthetic import SyntheticCamera
from kiosk_core.errors import MediaError

SIZE_IN_GRAPH = re.compile(r"(?:size|s)=(\d+)x(\d+)")
RATE_IN_GRAPH = re.compile(r"(?:rate|r)=(\d+(?:\.\d+)?)")


class UnknownSource(MediaError, LookupError):
    code = "media.unknown_source"


def source_from_spec(
    name: str, spec: str, cameras: Mapping[str, CameraConfig], **kwargs: object
) -> FrameSource:
    """A closed ``FrameSource`` for ``spec``; raises ``UnknownSource`` naming what is configured."""
    if spec.startswith("lavfi:"):
        graph = spec[len("lavfi:") :]
        if not graph:
            raise UnknownSource("lavfi: needs a filtergraph, e.g. lavfi:testsrc2=size=1280x720:rate=30")
        size = SIZE_IN_GRAPH.search(graph)
        rate = RATE_IN_GRAPH.search(graph)
        return SyntheticCamera(
            name,
            graph,
            framerate=float(rate.group(1)) if rate else 25.0,
            size=(int(size.group(1)), int(size.group(2))) if size else (320, 240),
            **kwargs,
        )
    if spec.startswith("/dev/"):
        return open_camera(name, CameraConfig(backend="v4l2", device=spec), **kwargs)
    if spec in cameras:
        return open_camera(name, cameras[spec], **kwargs)
    known = ", ".join(sorted(cameras)) or "none configured"
    raise UnknownSource(
        f"no camera named {spec!r} (configured: {known}; or give /dev/videoN or lavfi:<graph>)"
    )
