"""Cameras are found and named by their /dev/v4l/by-id/ links, which survive reboots and re-plugs.

Written from systemd's rules/60-persistent-v4l.rules (systemd/systemd): ``v4l/by-id/$env{ID_BUS}-
$env{ID_SERIAL}-video-index$attr{index}`` and ``v4l/by-path/$env{ID_PATH}-video-index$attr{index}``,
relative links to ``../../videoN``; sysfs ``/sys/class/video4linux/videoN/{name,index}`` (a UVC
camera has index 0 for capture and 1 for metadata). The trees are built in a temporary directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.camera.config import CameraConfig, DoccamConfig
from drivers.camera.discovery import discover_cameras, stable_path
from drivers.camera.v4l2 import V4l2Camera

C920 = "usb-046d_HD_Pro_Webcam_C920_8A1B2C3D-video-index"
DOC = "usb-Document_Camera_Document_Camera_0001-video-index"
PORT = "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.{}:1.0-video-index"


def kiosk_tree(tmp_path: Path) -> tuple[Path, Path]:
    dev, sys = tmp_path / "dev", tmp_path / "sys"
    nodes = {  # node: (sysfs name, index)
        "video0": ("HD Pro Webcam C920", 0),
        "video1": ("HD Pro Webcam C920", 1),
        "video2": ("Document Camera", 0),
        "video3": ("Document Camera", 1),
        "video4": ("USB3.0 HD Video Capture", 0),  # an HDMI grabber without a serial: by-path only
        "video10": ("bcm2835-codec-decode", 0),
        "video11": ("bcm2835-codec-encode", 0),
        "video12": ("bcm2835-codec-isp", 0),
    }
    (dev / "v4l" / "by-id").mkdir(parents=True)
    (dev / "v4l" / "by-path").mkdir(parents=True)
    for node, (name, index) in nodes.items():
        (dev / node).touch()
        d = sys / "class" / "video4linux" / node
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "index").write_text(f"{index}\n")
    for i, node in enumerate(("video0", "video1")):
        os.symlink(f"../../{node}", dev / "v4l" / "by-id" / f"{C920}{i}")
    for i, node in enumerate(("video2", "video3")):
        os.symlink(f"../../{node}", dev / "v4l" / "by-id" / f"{DOC}{i}")
    for port, node in ((2, "video0"), (3, "video2"), (4, "video4")):
        os.symlink(f"../../{node}", dev / "v4l" / "by-path" / (PORT.format(port) + "0"))
    return dev, sys


def test_discovery_prefers_by_id_then_by_path_and_skips_non_cameras(tmp_path: Path) -> None:
    dev, sys = kiosk_tree(tmp_path)
    found = discover_cameras(dev, sys)
    assert [(Path(c.path).parent.name, Path(c.path).name, Path(c.node).name) for c in found] == [
        ("by-id", f"{C920}0", "video0"),
        ("by-id", f"{DOC}0", "video2"),
        ("by-path", PORT.format(4) + "0", "video4"),
    ]
    assert all(c.stable for c in found) and found[0].name == "HD Pro Webcam C920"
    # Every path discovery gives is one the config takes.
    for c in found:
        assert CameraConfig(device=str(c.path).replace(str(tmp_path), "")).device.startswith("/dev/v4l/")


def test_without_udev_links_the_bare_nodes_are_offered_as_not_stable(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for n in (2, 0, 10):
        (dev / f"video{n}").touch()
    found = discover_cameras(dev, tmp_path / "no-sys")
    assert [Path(c.path).name for c in found] == ["video0", "video2", "video10"]
    assert not any(c.stable for c in found)
    assert discover_cameras(tmp_path / "nothing", tmp_path / "nothing") == []


def test_a_bare_node_in_the_config_is_told_its_stable_name(tmp_path: Path, caplog, monkeypatch) -> None:
    from drivers.camera import v4l2

    dev, _ = kiosk_tree(tmp_path)
    assert stable_path(str(dev / "video2"), dev) == str(dev / "v4l" / "by-id" / f"{DOC}0")
    assert stable_path(str(dev / "video4"), dev) == str(dev / "v4l" / "by-path" / (PORT.format(4) + "0"))
    assert stable_path(str(dev / "v4l" / "by-id" / f"{DOC}0"), dev) is None  # already stable
    monkeypatch.setattr(v4l2, "stable_path", lambda d: stable_path(d.replace("/dev", str(dev), 1), dev))
    with caplog.at_level(logging.WARNING, logger="kiosk.camera"):
        V4l2Camera.from_config("room_main", CameraConfig(device="/dev/video0"))
        V4l2Camera.from_config("doccam", CameraConfig(device=f"/dev/v4l/by-id/{DOC}0"))
    assert "/dev/video0 can change at the next reboot or re-plug" in caplog.text and f"{C920}0" in caplog.text
    assert "doccam" not in caplog.text


@pytest.mark.parametrize(
    "device",
    [
        f"/dev/v4l/by-id/{C920}0",
        "/dev/v4l/by-path/" + PORT.format(2) + "0",
        "/dev/v4l/by-id/usb-Sonix_Technology_Co.__Ltd._USB_2.0_Camera_SN0001+A@1=2-video-index0",
        "/dev/video0",
    ],
)
def test_the_config_accepts_udev_names(device: str) -> None:
    assert CameraConfig(device=device).device == device
    assert DoccamConfig(device=device).device == device


@pytest.mark.parametrize(
    "device",
    [
        "/dev/../etc/shadow",
        "/dev/v4l/by-id/../../../etc/passwd",
        "/dev/./video0",
        "/dev//video0",
        "/dev/v4l/by-id/usb cam",
        "/dev/v4l/by-id/cam;reboot",
        "/dev/v4l/by-id/" + "x" * 121,
        "file:/dev/video0",
        "/dev/",
    ],
)
def test_the_config_refuses_paths_that_are_not_plain_device_names(device: str) -> None:
    with pytest.raises(ValidationError, match="must be a device path under /dev"):
        CameraConfig(device=device)
    with pytest.raises(ValidationError, match="must be a device path under /dev"):
        DoccamConfig(device=device)


def test_the_example_config_names_cameras_by_id() -> None:
    import tomllib

    text = (Path(__file__).parent.parent / "docs" / "kiosk.example.toml").read_text(encoding="utf-8")
    # The camera lines are commented out (a kiosk without cameras is valid): validate them uncommented.
    lines = text.splitlines()
    start = lines.index("# [drivers.camera.room_main]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    drivers = tomllib.loads("\n".join(block))["drivers"]
    devices = [
        CameraConfig(**cam).device for cam in drivers["camera"].values() if cam.get("backend") == "v4l2"
    ]
    assert devices and all(d.startswith("/dev/v4l/by-id/") for d in devices)
    assert CameraConfig(**drivers["camera"]["room_backup"]).backend == "picamera2"
    assert DoccamConfig(**drivers["doccam"]).device.startswith("/dev/v4l/by-id/")
