"""The document camera: a still is a full-size JPEG with the right SHA-256, and the preview comes back."""

from __future__ import annotations

import hashlib
import math
import subprocess
import threading
import time
from pathlib import Path

import pytest

from drivers.camera.config import DoccamConfig
from drivers.camera.deskew import find_page
from drivers.camera.doccam import DocumentCamera, jpeg_quality_to_qscale
from drivers.camera.errors import CameraBusy, CameraError
from drivers.camera.synthetic import PAGE_TILT_RAD
from kiosk_core.health import HealthStatus

CFG = DoccamConfig(
    backend="synthetic",
    preview_size="320x240",
    still_size="1632x1224",
    still_framerate=10,
    warmup_frames=2,
    auto_crop=False,
)


@pytest.fixture
def doccam():
    cam = DocumentCamera(CFG)
    cam.open()
    yield cam
    cam.close()


def test_still_is_a_full_size_jpeg_with_its_sha256(doccam: DocumentCamera, tmp_path: Path) -> None:
    assert doccam.preview.get(timeout=3) is not None
    still = doccam.capture_still(tmp_path)
    data = still.path.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"
    assert hashlib.sha256(data).hexdigest() == still.sha256 and len(data) == still.size
    assert (still.width, still.height) == (1632, 1224)
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            str(still.path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "mjpeg,1632,1224"
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    # back to preview at preview size
    doccam.preview.drain()
    frame = doccam.preview.get(timeout=3)
    assert frame is not None and frame.frame.width == 320
    assert doccam.health().status == HealthStatus.OK


def test_a_second_still_while_one_is_taken_is_refused(doccam: DocumentCamera, tmp_path: Path) -> None:
    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(doccam.capture_still(tmp_path / "a")))
    t.start()
    time.sleep(0.05)
    with pytest.raises(CameraBusy):
        doccam.capture_still(tmp_path / "b")
    t.join(10)
    assert results and not (tmp_path / "b").exists()


def test_a_camera_that_cannot_give_the_still_size_is_a_clear_error(tmp_path: Path) -> None:
    cam = DocumentCamera(
        DoccamConfig(
            backend="v4l2",
            device="/dev/video-not-here",
            open_timeout_s=0.5,
            still_framerate=10,
            warmup_frames=0,
        )
    )
    with pytest.raises(CameraError, match="no full-size frame"):
        cam.capture_still(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_quality_maps_onto_qscale() -> None:
    assert jpeg_quality_to_qscale(100) == 2 and jpeg_quality_to_qscale(10) == 31
    assert jpeg_quality_to_qscale(90) < jpeg_quality_to_qscale(50)


def first_dark_row(frame, x: int) -> int:
    """Top-most row whose pixel in column ``x`` is dark ink (a line of "text")."""
    gray = frame.reformat(format="gray")
    plane = gray.planes[0]
    data = bytes(plane)
    for y in range(gray.height):
        if data[y * plane.line_size + x] < 100:
            return y
    raise AssertionError("no ink found")


def test_the_simulated_page_is_found_straightened_and_cut_from_the_desk(tmp_path: Path) -> None:
    import av

    cam = DocumentCamera(CFG.model_copy(update={"auto_crop": True}))
    still = cam.capture_still(tmp_path)
    assert still.page is not None
    assert abs(still.page.angle_deg - math.degrees(PAGE_TILT_RAD)) < 0.7
    # the page is 816x978 in a 1632x1224 picture: the still is the page, not the desk
    assert 0.85 < still.width / 816 < 1.0 and 0.85 < still.height / 978 < 1.0
    with av.open(str(still.path)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (still.width, still.height)
    gray = frame.reformat(format="gray")
    plane, w, h = gray.planes[0], gray.width, gray.height
    data = bytes(plane)
    border = [data[y * plane.line_size + x] for y in (2, h - 3) for x in range(0, w, 7)]
    border += [data[y * plane.line_size + x] for x in (2, w - 3) for y in range(0, h, 7)]
    assert min(border) > 180, "desk left at the border"
    # the first line of "text" is level: same row at its left and right ends (6 degrees would be ~40 px)
    assert abs(first_dark_row(frame, w // 5) - first_dark_row(frame, w * 3 // 4)) <= 3
    assert hashlib.sha256(still.path.read_bytes()).hexdigest() == still.sha256


def test_no_page_means_the_full_frame_is_kept(tmp_path: Path) -> None:
    cam = DocumentCamera(CFG.model_copy(update={"auto_crop": True, "pattern": "testsrc2"}))
    still = cam.capture_still(tmp_path)
    assert still.page is None and (still.width, still.height) == (1632, 1224)


def test_find_page_declines_what_is_not_a_page() -> None:
    from drivers.camera.synthetic import black_frame

    assert find_page(black_frame(640, 480)) is None  # nothing bright
    white = black_frame(640, 480)
    white.planes[0].update(bytes([235]) * white.planes[0].buffer_size)
    assert find_page(white) is None  # no desk around it
