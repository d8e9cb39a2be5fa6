"""Which V4L2 cameras are plugged in, each named by the path that survives reboots and re-plugs.

``/dev/videoN`` numbers are handed out in the order the kernel finds devices, so after a reboot or a
re-plug the room camera and the backup can swap numbers. udev also links every USB camera under
``/dev/v4l/by-id/`` (``usb-<vendor>_<model>_<serial>-video-index0``: the same camera whatever port
or order) and ``/dev/v4l/by-path/`` (the same USB port whatever camera). ``discover_cameras()``
prefers the by-id name, then by-path, then the bare node; the config accepts all three, the docs
use by-id. Two identical cameras without serial numbers get the same by-id name from udev: then only
by-path tells them apart (the link is kept by the first node that claims it, so it is not offered
twice).

Nodes that are not cameras are left out: a UVC camera's second node (``index`` 1, metadata), and the
Raspberry Pi's own codec, ISP and CSI-receiver nodes (a Pi camera module is opened with
``backend = "picamera2"``, not through them). Reads sysfs (``/sys/class/video4linux/videoN/name``,
``index``) where it exists; the roots are parameters so a test can build a tree.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kiosk.camera")

NODE = re.compile(r"^video[0-9]{1,3}$")
# Raspberry Pi platform nodes (bcm2835-codec-*, bcm2835-isp, rpivid, pispbe, rp1-cfe, unicam, hevc
# decoder): memory-to-memory or sensor-receiver devices, never a room camera.
NOT_CAMERAS = re.compile(r"^(bcm2835-codec|bcm2835-isp|rpivid|rpi-hevc|pispbe|rp1-cfe|unicam|hevc)", re.I)


@dataclass(frozen=True, slots=True)
class CameraDevice:
    path: str  # what to write in the config: by-id, else by-path, else the node
    node: str  # the /dev/videoN it is now
    name: str  # the driver's name for it (the card), "" without sysfs
    stable: bool  # path survives reboots and re-plugs

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "node": self.node, "name": self.name, "stable": self.stable}


def _links(directory: Path) -> dict[str, str]:
    """node real path -> the first link (sorted, capture index first) pointing at it."""
    found: dict[str, str] = {}
    try:
        entries = sorted(directory.iterdir(), key=lambda p: (not p.name.endswith("-index0"), p.name))
    except OSError:
        return found
    for link in entries:
        target = os.path.realpath(link)
        found.setdefault(target, str(link))
    return found


def _sysfs(sys_root: Path, node: str) -> tuple[str, int] | None:
    base = sys_root / "class" / "video4linux" / node
    if not base.is_dir():
        return None
    try:
        name = (base / "name").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        name = ""
    try:
        index = int((base / "index").read_text().strip())
    except (OSError, ValueError):
        index = 0
    return name, index


def discover_cameras(dev_root: Path = Path("/dev"), sys_root: Path = Path("/sys")) -> list[CameraDevice]:
    """Capture cameras, by-id-named ones first, then by-path, then bare nodes (each sorted)."""
    by_id = _links(dev_root / "v4l" / "by-id")
    by_path = _links(dev_root / "v4l" / "by-path")
    try:
        nodes = sorted((p for p in dev_root.iterdir() if NODE.match(p.name)), key=lambda p: int(p.name[5:]))
    except OSError:
        nodes = []
    cameras: list[CameraDevice] = []
    for node in nodes:
        info = _sysfs(sys_root, node.name)
        name, index = info if info is not None else ("", 0)
        if index != 0 or NOT_CAMERAS.match(name):
            continue
        real = os.path.realpath(node)
        path = by_id.get(real) or by_path.get(real)
        cameras.append(CameraDevice(path or str(node), str(node), name, path is not None))
    rank = {"by-id": 0, "by-path": 1}
    cameras.sort(key=lambda c: (rank.get(Path(c.path).parent.name, 2), c.path if c.stable else ""))
    return cameras


def stable_path(device: str, dev_root: Path = Path("/dev")) -> str | None:
    """The by-id (else by-path) link of ``device`` when ``device`` is a bare ``/dev/videoN``."""
    if not NODE.match(Path(device).name) or Path(device).parent != dev_root:
        return None
    real = os.path.realpath(device)
    return _links(dev_root / "v4l" / "by-id").get(real) or _links(dev_root / "v4l" / "by-path").get(real)
