"""Audio beside the video: a simulated microphone (lavfi sine) recorded in sync, a missing ALSA device
that never stops the video, and hostile ``[media.audio]`` values refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_media.audio import AudioEncoder, AudioSource, CapturedAudio, device_of
from edge_media.cli import record
from edge_media.config import AudioConfig, MediaConfig
from kiosk_core.errors import MediaError

ROOT = Path(__file__).resolve().parent.parent
FFPROBE = "/usr/bin/ffprobe"
VIDEO = "lavfi:testsrc2=size=320x240:rate=30"
SINE = "lavfi:sine=frequency=440:sample_rate=48000"


def kiosk(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def streams(path: Path) -> list[dict]:
    done = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,start_time,duration,sample_rate",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["streams"]


def packet_span(path: Path, kind: str) -> tuple[float, float]:
    """First packet start and last packet end of the stream of ``kind`` (what a player shows).

    The start is taken from the second packet: fragmented MP4 without an edit list pins each track's
    first sample to 0 and keeps the true times from the second sample on."""
    done = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-select_streams",
            kind[0],
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    rows = [line.split(",") for line in done.stdout.split() if line]
    assert rows, f"no {kind} packets in {path.name}"
    assert len(rows) >= 2, f"too few {kind} packets in {path.name}"
    start = float(rows[1][0]) - float(rows[0][1])
    return start, max(float(r[0]) + float(r[1]) for r in rows)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("container", ["fmp4", "mpegts"])
def test_record_with_a_simulated_microphone_keeps_audio_in_sync(tmp_path: Path, container: str) -> None:
    out = tmp_path / "rec"
    done = kiosk(
        "media",
        "record",
        "--source",
        VIDEO,
        "--audio",
        SINE,
        "--container",
        container,
        "--out",
        str(out),
        "--seconds",
        "3",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["audio"]["packets_written"] > 100 and summary["audio"]["dropped"] == 0
    [seg] = summary["segments"]  # 3 s < segment_s: one file
    info = streams(Path(seg["path"]))
    assert sorted(s["codec_type"] for s in info) == ["audio", "video"]
    audio = next(s for s in info if s["codec_type"] == "audio")
    assert audio["codec_name"] == "aac" and audio["sample_rate"] == "48000"
    v_start, v_end = packet_span(Path(seg["path"]), "video")
    a_start, a_end = packet_span(Path(seg["path"]), "audio")
    assert abs(a_start - v_start) < 0.1, (a_start, v_start)
    assert abs((a_end - a_start) - (v_end - v_start)) < 0.2, ((a_start, a_end), (v_start, v_end))


@pytest.mark.timeout(30)
def test_a_missing_alsa_microphone_is_reported_and_the_video_still_records(tmp_path: Path) -> None:
    mic = AudioSource("alsa:hw:9,9", reopen_base_s=0.05, reopen_cap_s=0.2)
    mic.open()
    try:
        deadline = time.monotonic() + 5
        while mic.reopens < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = mic.health()
        assert health.status == "missing" and mic.reopens >= 2  # and it keeps trying, with backoff
        assert "hw:9,9" in health.reason and "arecord -l" in health.reason
    finally:
        mic.close()

    summary = record(VIDEO, None, str(tmp_path / "rec"), 2.0, audio_spec="alsa:hw:9,9")
    assert summary["frames"] >= 50 and summary["segments"]
    assert summary["audio"]["packets_written"] == 0
    [seg] = summary["segments"]
    # The track stays declared (a microphone that comes back mid-segment is heard) but holds nothing.
    assert [s["codec_type"] for s in streams(Path(seg["path"]))] == ["video", "audio"]
    v_start, v_end = packet_span(Path(seg["path"]), "video")
    assert v_end - v_start > 1.5


def test_audio_timestamps_follow_the_capture_clock_of_the_video() -> None:
    origin = 1000.0
    enc = AudioEncoder(AudioConfig(sample_rate=48000), origin=origin)

    def block(t: float) -> CapturedAudio:
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(bytes(frame.planes[0].buffer_size))
        frame.sample_rate = 48000
        return CapturedAudio(frame, t)

    packets = []
    t = origin + 0.5  # the microphone starts half a second into the pipeline's timeline
    for _ in range(50):
        packets += enc.encode(block(t))
        t += 0.02
    t += 1.0  # a second of blocks lost (queue overflow, a replug): audio jumps forward, not drifting behind
    for _ in range(50):
        packets += enc.encode(block(t))
        t += 0.02
    packets += enc.close()
    pts = [p.packet.pts for p in packets]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
    assert packets[0].packet.time_base == Fraction(1, 48000)
    first_audible = pts[0] + 1024  # the AAC encoder's priming frame comes first
    assert abs(first_audible / 48000 - 0.5) < 0.025
    gap = max(b - a for a, b in zip(pts, pts[1:], strict=False)) / 48000
    assert 0.9 < gap < 1.1
    assert abs(pts[-1] / 48000 - (t - origin)) < 0.1


@pytest.mark.parametrize(
    "values",
    [
        {"source": "alsa:"},
        {"source": "alsa:hw:1,0; rm -rf /"},
        {"source": "pulse:default"},
        {"source": "lavfi:"},
        {"source": "lavfi:sine\x00"},
        {"source": "/dev/snd/pcmC1D0c"},
        {"source": "alsa:" + "x" * 200},
        {"sample_rate": 12345},
        {"sample_rate": -48000},
        {"channels": 0},
        {"channels": 8},
        {"bitrate_kbps": 0},
        {"bitrate_kbps": 100_000},
        {"codec": "opus"},
    ],
)
def test_hostile_audio_config_is_refused(values: dict) -> None:
    with pytest.raises(ValidationError):
        AudioConfig(**values)


def test_audio_is_off_by_default_and_a_good_section_validates() -> None:
    assert MediaConfig().audio.source == ""
    cfg = MediaConfig(
        audio={"source": "alsa:hw:1,0", "sample_rate": 44100, "channels": 2, "bitrate_kbps": 96}
    )
    assert cfg.audio.channels == 2 and device_of(cfg.audio.source) == ("alsa", "hw:1,0")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_any_source_text_is_either_refused_or_names_a_device(spec: str) -> None:
    try:
        cfg = AudioConfig(source=spec)
    except ValidationError:
        return
    if cfg.source:
        kind, device = device_of(cfg.source)
        assert kind in ("alsa", "lavfi") and device and "\x00" not in device
    with pytest.raises(MediaError):
        device_of("pulse:" + spec)


def test_record_refuses_a_hostile_audio_option(tmp_path: Path) -> None:
    done = kiosk(
        "media",
        "record",
        "--source",
        VIDEO,
        "--audio",
        "alsa:hw:1,0;reboot",
        "--out",
        str(tmp_path / "o"),
        "--seconds",
        "1",
    )
    assert done.returncode == 2 and "--audio" in done.stderr and not (tmp_path / "o").exists()


@pytest.mark.timeout(60)
async def test_the_media_process_records_sessions_with_the_configured_microphone(
    tmp_path: Path, bus_broker
) -> None:
    from tests.test_media_service import MEDIA, running_media

    async with running_media(tmp_path, bus_broker.port, MEDIA + f'[media.audio]\nsource = "{SINE}"\n') as (
        service,
        bench,
    ):
        await bench.call("record_start", {"session_id": "s-audio"})
        await asyncio.sleep(2.2)
        stopped = await bench.call("record_stop")
        assert stopped["segments"] >= 2 and stopped["errors"] == 0
        heard = 0.0
        for seg in sorted((service.recordings_dir / "s-audio").iterdir()):
            kinds = {s["codec_type"]: s["codec_name"] for s in await asyncio.to_thread(streams, seg)}
            assert kinds == {"video": "h264", "audio": "aac"}
            start, end = await asyncio.to_thread(packet_span, seg, "audio")
            heard += end - start
        assert heard > 1.8  # every segment carries its share of the sound
        exported = await bench.call("export", {"session_id": "s-audio"}, timeout_s=30)
        kinds = {
            s["codec_type"]: s["codec_name"] for s in await asyncio.to_thread(streams, Path(exported["path"]))
        }
        assert kinds == {"video": "h264", "audio": "aac"}  # the session export keeps the sound
