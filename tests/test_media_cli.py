"""``kiosk media record`` and ``kiosk media probe`` end to end, as a technician types them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def kiosk(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(90)
def test_record_from_lavfi_with_a_backup_writes_playable_segments(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    done = kiosk(
        "media",
        "record",
        "--source",
        "lavfi:testsrc2=size=320x240:rate=30",
        "--backup",
        "lavfi:testsrc=size=320x240:rate=30",
        "--out",
        str(out),
        "--seconds",
        "2.5",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["event"] == "done" and summary["frames"] >= 60
    assert summary["sources"]["backup"]["frames"] >= 60  # the backup was kept hot
    files = sorted(out.iterdir())
    assert [Path(s["path"]) for s in summary["segments"]] == files
    for seg in summary["segments"]:
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width",
                "-of",
                "csv=p=0",
                seg["path"],
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert probe.stdout.strip() == "h264,1280" and not probe.stderr  # default rendition: 720p


def test_record_with_an_unknown_camera_name_says_what_is_configured(tmp_path: Path) -> None:
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(
        '[device]\nid = "k1"\nname = "t"\nregion = ["33", "3308", "330803", "330803100", '
        '"330803100201"]\n[drivers.camera.room_main]\nbackend = "synthetic"\n'
    )
    done = kiosk(
        "--config",
        str(cfg),
        "media",
        "record",
        "--source",
        "ceiling_cam",
        "--out",
        str(tmp_path / "o"),
        "--seconds",
        "1",
    )
    assert done.returncode == 1
    assert "no camera named 'ceiling_cam' (configured: room_main" in done.stderr


def test_probe_of_a_missing_device_fails_with_advice() -> None:
    done = kiosk("media", "probe", "/dev/video-not-here")
    assert done.returncode == 1 and "check the USB cable" in done.stderr


def test_media_help_lists_the_actions() -> None:
    done = kiosk("media", "--help")
    assert done.returncode == 0 and all(a in done.stdout for a in ("run", "record", "probe"))


@pytest.mark.parametrize(
    "spec",
    [
        "/dev/video0",
        "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_8A3F1B2C-video-index0",
        "/dev/v4l/by-path/pci-0000:00:14.0-usb-0:1.2:1.0-video-index0",
        "room_main",
        "lavfi:testsrc2=size=320x240:rate=30",
    ],
)
def test_a_media_source_may_be_a_persistent_udev_name(spec: str) -> None:
    from edge_media.config import check_spec

    assert check_spec(spec) == spec


@pytest.mark.parametrize(
    "spec", ["/dev/../etc/shadow", "/dev/video0 -f x", "/dev//video0", "Room", "rtsp://x"]
)
def test_a_media_source_that_is_no_camera_is_refused(spec: str) -> None:
    from edge_media.config import check_spec

    with pytest.raises(ValueError):
        check_spec(spec)
