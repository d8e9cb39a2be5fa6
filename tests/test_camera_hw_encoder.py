"""``encoder = "auto"``: the board's H.264 hardware encoder where it has one, software elsewhere.

Written from the Raspberry Pi documentation and kernel: the Pi 4 (and 3) encode H.264 through the
``bcm2835-codec`` V4L2 memory-to-memory driver (raspberrypi/linux,
drivers/staging/vc04_services/bcm2835-codec/bcm2835-v4l2-codec.c: nodes ``bcm2835-codec-decode`` at
/dev/video10, ``-encode`` at /dev/video11, ``-isp`` at /dev/video12), used by FFmpeg as
``h264_v4l2m2m`` (libavcodec/v4l2_m2m_enc.c); no Pi encodes HEVC (the Pi 4/5 HEVC block,
``rpi-hevc-dec``, decodes only) and the Pi 5 has no video encoder (its nodes are the decoder and the
``pispbe`` ISP). The board model comes from the device tree (/proc/device-tree/model, NUL-ended).
Each board below is a directory tree built the way those files look on it.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from pydantic import ValidationError

from drivers.camera import hw_encoder
from drivers.camera.hw_encoder import Board, auto_encoder, read_board
from edge_media.config import RenditionConfig

FFMPEG = frozenset(av.codecs_available)


def board(tmp_path: Path, model: str | None, nodes: dict[str, str], sysfs: bool = True) -> Path:
    if model is not None:
        (tmp_path / "proc" / "device-tree").mkdir(parents=True)
        (tmp_path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    (tmp_path / "dev").mkdir(parents=True)
    for node, name in nodes.items():
        (tmp_path / "dev" / node).touch()
        if sysfs:
            d = tmp_path / "sys" / "class" / "video4linux" / node
            d.mkdir(parents=True)
            (d / "name").write_text(name + "\n")
    return tmp_path


PI4 = {
    "video10": "bcm2835-codec-decode",
    "video11": "bcm2835-codec-encode",
    "video12": "bcm2835-codec-isp",
    "video18": "bcm2835-codec-image_fx",
    "video19": "rpi-hevc-dec",
}
PI5 = {"video19": "rpi-hevc-dec", **{f"video{n}": "pispbe" for n in range(20, 36)}, "video0": "rp1-cfe"}


def test_a_pi_4_encodes_h264_in_hardware_and_h265_in_software(tmp_path: Path) -> None:
    b = read_board(board(tmp_path, "Raspberry Pi 4 Model B Rev 1.4", PI4))
    assert b == Board("Raspberry Pi 4 Model B Rev 1.4", True)
    assert auto_encoder("h264", b, FFMPEG) == "h264_v4l2m2m"
    assert auto_encoder("h265", b, FFMPEG) == "libx265"  # its HEVC block only decodes


def test_a_pi_5_has_no_encoder_and_uses_libx264(tmp_path: Path) -> None:
    b = read_board(board(tmp_path, "Raspberry Pi 5 Model B Rev 1.0", PI5))
    assert b.h264_m2m is False
    assert auto_encoder("h264", b, FFMPEG) == "libx264"


def test_without_sysfs_the_pi_node_number_decides_but_never_on_a_pi_5(tmp_path: Path) -> None:
    pi4 = read_board(board(tmp_path / "a", "Raspberry Pi 4 Model B Rev 1.5", PI4, sysfs=False))
    pi5 = read_board(board(tmp_path / "b", "Raspberry Pi 5 Model B Rev 1.0", {"video11": ""}, sysfs=False))
    pc = read_board(board(tmp_path / "c", None, {"video11": ""}, sysfs=False))
    assert (pi4.h264_m2m, pi5.h264_m2m, pc.h264_m2m) == (True, False, False)


def test_the_model_may_come_from_sysfs_and_a_pc_is_software(tmp_path: Path) -> None:
    base = tmp_path / "sys" / "firmware" / "devicetree" / "base"
    base.mkdir(parents=True)
    (base / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    (tmp_path / "dev").mkdir()
    assert read_board(tmp_path).model == "Raspberry Pi 4 Model B Rev 1.4"
    assert auto_encoder("h264", read_board(tmp_path / "dev"), FFMPEG) == "libx264"


def test_an_ffmpeg_without_the_m2m_encoder_falls_back_to_software(tmp_path: Path) -> None:
    b = read_board(board(tmp_path, "Raspberry Pi 4 Model B Rev 1.4", PI4))
    assert auto_encoder("h264", b, FFMPEG - {"h264_v4l2m2m"}) == "libx264"
    assert av.Codec("h264_v4l2m2m", "w").name == "h264_v4l2m2m"  # PyAV's FFmpeg has it


def test_rendition_auto_follows_the_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine (x86, no Pi device tree): software.
    assert RenditionConfig(encoder="auto").encoder_name == "libx264"
    assert RenditionConfig(codec="h265", encoder="auto").encoder_name == "libx265"
    pi4 = read_board(board(tmp_path, "Raspberry Pi 4 Model B Rev 1.4", PI4))
    monkeypatch.setattr(hw_encoder, "choose_encoder", lambda codec: auto_encoder(codec, pi4, FFMPEG))
    assert RenditionConfig(encoder="auto").encoder_name == "h264_v4l2m2m"
    assert RenditionConfig(codec="h265", encoder="auto").encoder_name == "libx265"
    assert RenditionConfig().encoder_name == "libx264"  # "" stays software, as before


@pytest.mark.parametrize(
    "codec, encoder", [("h264", "hevc_v4l2m2m"), ("h265", "h264_v4l2m2m"), ("h264", "AUTO")]
)
def test_an_encoder_that_does_not_make_the_codec_is_a_config_error(codec: str, encoder: str) -> None:
    with pytest.raises(ValidationError, match="use auto or one of"):
        RenditionConfig(codec=codec, encoder=encoder)
