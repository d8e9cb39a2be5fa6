"""The document camera (高拍仪): a low-resolution preview and full-resolution JPEG stills.

A UVC document camera cannot stream 640x480 and hand over 3264x2448 at the same time, so a still is
taken the way its vendor tools do: close the preview, reopen the device at full size, discard a few
warm-up frames while exposure and focus settle, keep the next frame, close, and reopen the preview.
With ``auto_crop`` (default), the page is found, straightened and the desk cut away
(``deskew.py``); when no page is clearly found the full frame is kept. The still is encoded as JPEG,
written atomically (temp file, fsync, rename, fsync of the directory) and described by its SHA-256.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.camera.config import CameraConfig, DoccamConfig, parse_size
from drivers.camera.deskew import Page, crop_to_page, find_page
from drivers.camera.errors import CameraBusy, CameraError, CameraTimeout
from drivers.camera.factory import open_camera
from drivers.camera.source import FrameSource
from kiosk_core.fsutil import write_atomic
from kiosk_core.health import Health, HealthStatus

if TYPE_CHECKING:
    import av


# The still's thumbnail for the kiosk screen (the review "is the picture clear?"): at most this many
# pixels each way. A half-block picture draws one pixel per cell column and two per row, so a 160x45
# console shows at most about 129x74 pixels of it: 160 covers that, and a bigger thumbnail would only
# make the review screen slower to draw (the UI's pure-Python filter; it accepts up to 240x240).
THUMBNAIL_MAX = 160


@dataclass(frozen=True)
class Thumbnail:
    """A small row-major RGB24 copy of a still, made from the same (cropped) frame as the JPEG."""

    width: int
    height: int
    rgb: bytes = field(repr=False)


def thumbnail_size(w: int, h: int, limit: int = THUMBNAIL_MAX) -> tuple[int, int]:
    """(width, height) of ``w`` x ``h`` shrunk by one factor to fit ``limit`` x ``limit`` (never enlarged)."""
    if w <= 0 or h <= 0:
        raise ValueError(f"no thumbnail of a {w}x{h} image")
    scale = min(1.0, limit / max(w, h))
    return max(1, min(limit, round(w * scale))), max(1, min(limit, round(h * scale)))


def make_thumbnail(frame: av.VideoFrame, limit: int = THUMBNAIL_MAX) -> Thumbnail:
    """``frame`` as RGB24 within ``limit`` x ``limit`` pixels, area-averaged (text stays text instead of
    aliasing into noise, so a villager can judge whether the page is sharp and whole)."""
    from av.video.reformatter import Interpolation, VideoReformatter

    w, h = thumbnail_size(frame.width, frame.height, limit)
    # An own reformatter: the frame's shared one may be busy on another thread (the preview's).
    small = VideoReformatter().reformat(
        frame, width=w, height=h, format="rgb24", interpolation=Interpolation.AREA
    )
    # Rows may be padded in the plane: take exactly w*3 bytes of each.
    plane = small.planes[0]
    data = bytes(plane)
    line = plane.line_size
    rgb = data if line == w * 3 else b"".join(data[y * line : y * line + w * 3] for y in range(h))
    return Thumbnail(w, h, rgb)


@dataclass(frozen=True)
class Still:
    path: Path
    sha256: str
    size: int  # bytes
    width: int
    height: int
    taken_at: float  # wall clock
    page: Page | None = None  # where the page was found, when the still was cropped to it
    # Personal data (a picture of the villager's paper): never in as_dict(), a reply, an event or a log.
    thumbnail: Thumbnail | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "taken_at": round(self.taken_at, 3),
            "page": self.page.as_dict() if self.page else None,
        }


def jpeg_quality_to_qscale(quality: int) -> int:
    """Map a 10-100 "JPEG quality" onto FFmpeg's mjpeg qscale (2 best ... 31 worst)."""
    return max(2, min(31, round(2 + (100 - quality) * 29 / 90)))


def encode_jpeg(frame: av.VideoFrame, quality: int = 90) -> bytes:
    """One frame as a baseline JPEG (full-range 4:2:0)."""
    from fractions import Fraction

    import av

    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = frame.width, frame.height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.flags |= av.codec.context.Flags.qscale
    ctx.global_quality = jpeg_quality_to_qscale(quality) * 118  # FF_QP2LAMBDA
    img = frame.reformat(format="yuvj420p") if frame.format.name != "yuvj420p" else frame
    img.pts = 0
    packets = ctx.encode(img) + ctx.encode(None)
    if not packets:
        raise CameraError("JPEG encoder returned nothing", device="doccam")
    return b"".join(bytes(p) for p in packets)


class DocumentCamera:
    """Preview source plus ``capture_still()``. Thread-safe; one still at a time."""

    kind = "doccam"

    def __init__(self, cfg: DoccamConfig, *, name: str = "doccam") -> None:
        self.cfg = cfg
        self.name = name
        self._lock = threading.Lock()
        self.preview: FrameSource = self._source(cfg.preview_size, cfg.preview_framerate, "preview")
        self.stills_taken = 0
        self.last_error = ""

    def _source(self, size: str, framerate: float, role: str) -> FrameSource:
        cam = CameraConfig(
            backend=self.cfg.backend,
            device=self.cfg.device,
            input_format=self.cfg.input_format,
            video_size=size,
            framerate=framerate,
            model=self.cfg.model,
            options=self.cfg.options,
            open_timeout_s=self.cfg.open_timeout_s,
            pattern=self.cfg.pattern,
        )
        return open_camera(f"{self.name}.{role}", cam, queue_frames=2)

    @property
    def model(self) -> str:
        return self.preview.model

    @property
    def backend(self) -> str:
        return self.cfg.backend

    def open(self) -> None:
        self.preview.open()

    def close(self) -> None:
        self.preview.close()

    def health(self) -> Health:
        if self._lock.locked():
            return Health(HealthStatus.OK, "taking a still")
        if self.last_error and self.preview.health().status != HealthStatus.OK:
            return Health(HealthStatus.MISSING, self.last_error)
        return self.preview.health()

    def stats(self) -> dict[str, Any]:
        return {
            **self.preview.stats(),
            "stills": self.stills_taken,
            "still_size": self.cfg.still_size,
            "last_error": self.last_error,
        }

    def capture_still(self, out_dir: Path, *, stem: str | None = None) -> Still:
        """Take a full-resolution still into ``out_dir``; blocking (run it in a worker thread).

        Raises ``CameraBusy`` if a still is already being taken, ``CameraTimeout``/``CameraMissing``
        if the camera gives no usable frame. The preview is reopened in every case.
        """
        if not self._lock.acquire(blocking=False):
            raise CameraBusy("the document camera is already taking a still", device=self.name)
        was_previewing = self.preview.is_open
        try:
            self.preview.close()
            frame = self._grab_full_size()
            page = find_page(frame) if self.cfg.auto_crop else None
            if page is not None:
                frame = crop_to_page(frame, page)
            data = encode_jpeg(frame, self.cfg.jpeg_quality)
            thumbnail = make_thumbnail(frame)
            taken_at = time.time()
            out_dir.mkdir(parents=True, exist_ok=True)
            name = (
                stem
                or time.strftime("doc-%Y%m%dT%H%M%S", time.gmtime(taken_at)) + f"-{self.stills_taken:04d}"
            )
            path = out_dir / f"{name}.jpg"
            write_atomic(path, data)
            self.stills_taken += 1
            self.last_error = ""
            return Still(
                path,
                hashlib.sha256(data).hexdigest(),
                len(data),
                frame.width,
                frame.height,
                taken_at,
                page,
                thumbnail=thumbnail,
            )
        except CameraError as exc:
            self.last_error = str(exc)
            raise
        finally:
            if was_previewing:
                self.preview.open()
            self._lock.release()

    def _grab_full_size(self) -> av.VideoFrame:
        want = parse_size(self.cfg.still_size)
        source = self._source(self.cfg.still_size, self.cfg.still_framerate, "still")
        deadline = (
            time.monotonic()
            + self.cfg.open_timeout_s
            + (self.cfg.warmup_frames + 1) * 2 / self.cfg.still_framerate
        )
        source.open()
        try:
            skipped = 0
            while time.monotonic() < deadline:
                captured = source.get(timeout=max(0.0, deadline - time.monotonic()))
                if captured is None:
                    break
                if skipped < self.cfg.warmup_frames:
                    skipped += 1
                    continue
                frame = captured.frame
                if (frame.width, frame.height) != want:
                    raise CameraError(
                        f"the document camera gave {frame.width}x{frame.height} instead of "
                        f"{want[0]}x{want[1]}: check still_size against `kiosk media probe`",
                        device=self.name,
                    )
                return frame
            reason = source.health().reason
            raise CameraTimeout(
                f"the document camera gave no full-size frame within the deadline ({reason})",
                device=self.name,
            )
        finally:
            source.close()
