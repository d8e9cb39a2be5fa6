"""No setting that silently does nothing: what this machine's FFmpeg or hardware cannot do is refused
by ``kiosk config check``, or reported by the media process (health ``degraded``, a log line, an event),
and ``kiosk media record`` says in one line why an encoder is unavailable (or falls back if told to)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance import config as config_mod
from appliance.media_control import MediaControl
from drivers.camera.hw_encoder import read_board
from edge_media.config import RenditionConfig
from edge_media.push import LivePush, PushUnsupported, StreamParams
from edge_media.push_transport import protocol_available, supported_schemes
from edge_media.service import MediaService
from kiosk_core.localbus import LocalBus
from sim.mosquitto import Mosquitto
from tests.conftest import write_config
from tests.test_media_push import Events
from tests.test_media_service import Bench, Ctx

ROOT = Path(__file__).resolve().parent.parent
NO_SRT = not protocol_available("srt")
NO_M2M = not read_board().h264_m2m  # no V4L2 M2M encoder device here: h264_v4l2m2m cannot open
DEVICE = """
[device]
id = "kiosk-0001"
name = "t"
region = ["33", "3308", "330803", "330803100", "330803100201"]
"""


def kiosk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=90
    )


def check(tmp_path: Path, media: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "kiosk.toml"
    path.write_text(DEVICE + media)
    return kiosk("config", "check", str(path))


@pytest.mark.skipif(not NO_SRT, reason="this FFmpeg build has libsrt: srt:// is a working setting here")
def test_config_check_refuses_srt_on_an_ffmpeg_without_it_naming_the_key_and_what_works(
    tmp_path: Path,
) -> None:
    done = check(tmp_path, '[media.push]\nurl = "srt://ingest.example:9000?streamid=k1&passphrase=s3cret"\n')
    assert done.returncode == 1
    [line] = [x for x in done.stderr.splitlines() if "media.push.url" in x]
    assert "'srt://ingest.example:9000'" in line and "no srt protocol (libsrt)" in line
    assert "tcp://" in line and "rtmp://" in line and "srt://," not in line.split("push to", 1)[1]
    assert "s3cret" not in done.stderr  # the passphrase stays out of the error
    assert supported_schemes() == ["rtmp", "rtmps", "rtsp", "rtsps", "tcp", "udp"]
    assert check(tmp_path, '[media.push]\nurl = "tcp://ingest.example:9000"\n').returncode == 0


@pytest.mark.parametrize(
    "codec, url, ok",
    [
        ("h265", "rtmp://ingest.example/live/k1", False),
        ("h265", "rtmps://ingest.example/live/k1", False),
        ("h265", "tcp://ingest.example:9000", True),
        ("h265", "rtsp://ingest.example/live", True),
        ("h264", "rtmp://ingest.example/live/k1", True),
    ],
)
def test_config_check_refuses_h265_over_rtmp(tmp_path: Path, codec: str, url: str, ok: bool) -> None:
    done = check(tmp_path, f'[media.renditions.main]\ncodec = "{codec}"\n[media.push]\nurl = "{url}"\n')
    assert (done.returncode == 0) == ok, done.stderr
    if not ok:
        assert f"media.push.url = '{url}'" in done.stderr and "enhanced RTMP" in done.stderr


def test_an_encoder_fallback_must_make_the_renditions_codec() -> None:
    assert RenditionConfig(encoder="h264_v4l2m2m", encoder_fallback="libx264").encoder_fallback == "libx264"
    with pytest.raises(ValidationError, match="encoder_fallback 'libx265' does not make h264"):
        RenditionConfig(encoder="h264_v4l2m2m", encoder_fallback="libx265")
    with pytest.raises(ValidationError):
        RenditionConfig(encoder_fallback="h264_v4l2m2m")


def test_a_push_of_h265_over_rtmp_started_by_command_is_refused() -> None:
    push = LivePush("rtmp://127.0.0.1:1/live/k1", emit=Events(), on_adapt=lambda s: None)
    with pytest.raises(PushUnsupported, match="enhanced RTMP"):
        push.start(StreamParams("libx265", 320, 240, Fraction(1, 30)))
    assert push.stats()["state"] == "idle"  # nothing started


RECORD = ["media", "record", "--source", "lavfi:testsrc2=size=320x240:rate=30", "--seconds", "1.5"]


@pytest.mark.skipif(not NO_M2M, reason="this machine has a V4L2 M2M encoder")
@pytest.mark.timeout(90)
def test_record_with_an_absent_hardware_encoder_says_so_in_one_line_or_falls_back(tmp_path: Path) -> None:
    cfg = tmp_path / "kiosk.toml"
    rendition = '[media.renditions.main]\nencoder = "h264_v4l2m2m"\nsize = "320x240"\n'
    cfg.write_text(DEVICE + rendition)
    done = kiosk("--config", str(cfg), *RECORD, "--out", str(tmp_path / "a"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("kiosk media record: rendition main: encoder h264_v4l2m2m is unavailable")
    assert "no V4L2 memory-to-memory encoder device" in line and 'encoder_fallback = "libx264"' in line

    cfg.write_text(DEVICE + rendition + 'encoder_fallback = "libx264"\n')
    done = kiosk("--config", str(cfg), *RECORD, "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    [fallback] = [x for x in lines if x["event"] == "media.encoder.fallback"]
    assert (fallback["wanted"], fallback["using"]) == ("h264_v4l2m2m", "libx264") and fallback["error"]
    summary = lines[-1]
    assert summary["rendition"]["encoder"] == "libx264" and summary["frames"] >= 30 and summary["segments"]


MEDIA = """
[drivers.camera.room_main]
backend = "synthetic"
video_size = "320x240"
[media.sources]
backup = ""
doccam = false
[media.renditions.main]
size = "320x240"
bitrate_kbps = 300
threads = 1
encoder = "h264_v4l2m2m"
encoder_fallback = "libx264"
[media.push]
url = "srt://ingest.example:9000?streamid=k1&passphrase=s3cret"
[media]
state_interval_s = 0.3
"""


@pytest.mark.skipif(not (NO_SRT and NO_M2M), reason="needs an FFmpeg without libsrt and no V4L2 M2M encoder")
@pytest.mark.timeout(60)
async def test_the_service_reports_a_push_it_cannot_start_and_an_encoder_fallback(
    tmp_path: Path, bus_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The config came from elsewhere (not checked here): the process runs, and says what is off."""
    path = write_config(
        tmp_path / "kiosk.toml", bus_port=bus_broker.port, fleet_port=1, data_dir=tmp_path / "d", extra=MEDIA
    )
    bench = Bench(bus_broker.port)
    await bench.bus.start()
    appliance_bus = LocalBus("127.0.0.1", bus_broker.port, name="appliance")
    control = MediaControl(Ctx(appliance_bus))  # type: ignore[arg-type]
    await control.start()
    await appliance_bus.start()
    service = MediaService(config_mod.load(path))
    caplog.set_level(logging.WARNING, logger="kiosk.media")
    await service.start()
    try:
        await bench.wait_for(
            lambda: {"media.push.failed", "media.encoder.fallback"} <= {e["type"] for e in bench.events}
        )
        await bench.wait_for(lambda: control.health()["media"].status == "degraded")
        health = control.health()["media"]
        assert "live push to srt://ingest.example:9000 cannot start" in health.reason
        assert "h264_v4l2m2m unavailable" in health.reason and "using libx264" in health.reason
        state = bench.state
        assert state["uplink"]["state"] == "unavailable" and "libsrt" in state["uplink"]["error"]
        assert state["pipeline"]["renditions"]["main"]["encoder"] == "libx264"
        [failed] = [e["data"] for e in bench.events if e["type"] == "media.push.failed"]
        assert failed["target"] == "srt://ingest.example:9000" and "libsrt" in failed["error"]
        logged = [r.getMessage() for r in caplog.records]
        assert any("live push to srt://ingest.example:9000 cannot start" in m for m in logged)
        assert any("using libx264" in m for m in logged)
        assert "s3cret" not in json.dumps(bench.events) + json.dumps(state) + "".join(logged)
    finally:
        await service.stop()
        await appliance_bus.stop()
        await bench.bus.stop()
