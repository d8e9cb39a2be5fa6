"""Live push with a microphone: the same pipeline as the service (lavfi camera + lavfi sine microphone)
pushes MPEG-TS over TCP to the Debian ffmpeg CLI on 127.0.0.1, and the received file is checked with
ffprobe for one H.264 and one AAC stream that start together and last as long as each other."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge_media.audio import AudioSource
from edge_media.config import MediaConfig
from edge_media.pipeline import Pipeline
from edge_media.push import LivePush
from edge_media.service import PushOutput
from edge_media.sources import source_from_spec

FFPROBE = "/usr/bin/ffprobe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Is something listening on the TCP port? Read from /proc: a probe connection would use up its accept."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return True
    return False


URLS = {
    "tcp": "tcp://127.0.0.1:{port}",
    "rtsp": "rtsp://127.0.0.1:{port}/live",
    "rtmp": "rtmp://127.0.0.1:{port}/live/kiosk-0001",
}


def start_receiver(port: int, out: Path, kind: str = "tcp") -> subprocess.Popen:
    """The platform's ingest: ``ffmpeg -f mpegts -i tcp://...?listen=1 -c copy out.ts`` (or RTSP/RTMP in
    listen mode), listening on return."""
    url = URLS[kind].format(port=port)
    src = {
        "tcp": ["-f", "mpegts", "-i", f"{url}?listen=1"],
        "rtsp": ["-rtsp_flags", "listen", "-i", url],
        "rtmp": ["-listen", "1", "-f", "flv", "-i", url],
    }[kind]
    proc = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            *src,
            "-c",
            "copy",
            "-f",
            "mpegts",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(200):
        if listening(port):
            return proc
        time.sleep(0.025)
    proc.kill()
    proc.wait(5)
    raise RuntimeError("receiver did not start listening")


def finish_receiver(proc: subprocess.Popen) -> None:
    """The push closed its socket: the receiver sees the end of the stream and closes the file."""
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def probe(path: Path) -> list[dict[str, Any]]:
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
    """First packet's start and last packet's end of the stream of ``kind``, from the packets themselves."""
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
    assert len(rows) >= 2, f"too few {kind} packets in {path.name}"
    return float(rows[0][0]), max(float(r[0]) + float(r[1] or 0) for r in rows)


async def wait_until(check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def check_in_sync(received: Path, min_s: float) -> None:
    streams = probe(received)
    assert sorted(s["codec_type"] for s in streams) == ["audio", "video"], streams
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next(s for s in streams if s["codec_type"] == "audio")
    assert video["codec_name"] == "h264"
    assert audio["codec_name"] == "aac" and audio["sample_rate"] == "48000"
    assert abs(float(audio["start_time"]) - float(video["start_time"])) < 0.15, streams
    v_start, v_end = packet_span(received, "video")
    a_start, a_end = packet_span(received, "audio")
    assert abs(a_start - v_start) < 0.15, (a_start, v_start)
    assert abs((a_end - a_start) - (v_end - v_start)) < 0.3, ((a_start, a_end), (v_start, v_end))
    assert v_end - v_start > min_s  # the push really ran for seconds, not a packet or two


@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", ["tcp", "rtsp", "rtmp"])
async def test_the_push_carries_the_microphone_in_sync_with_the_video(tmp_path: Path, kind: str) -> None:
    port = free_port()
    received = tmp_path / "received.ts"
    receiver = start_receiver(port, received, kind)
    mcfg = MediaConfig.model_validate(
        {
            "renditions": {
                "main": {"size": "320x240", "fps": 30, "gop": 15, "preset": "ultrafast", "bitrate_kbps": 400}
            },
            "audio": {"source": "lavfi:sine=frequency=440:sample_rate=48000"},
        }
    )
    camera = source_from_spec("main", "lavfi:testsrc2=size=320x240:rate=30", {})
    microphone = AudioSource(mcfg.audio.source)
    events: list[tuple[str, dict]] = []

    async def emit(type_: str, data: dict) -> None:
        events.append((type_, data))

    push = LivePush(
        URLS[kind].format(port=port), emit=emit, on_adapt=lambda step: None, loop=asyncio.get_running_loop()
    )  # it starts on the pipeline thread, as in the service
    pipeline: Pipeline | None = None
    try:
        camera.open()
        microphone.open()
        pipeline = Pipeline({"main": camera}, mcfg, audio=microphone)
        pipeline.attach("main", PushOutput(push))  # hands the push the AAC encoder, as for the recorder
        pipeline.start()
        await wait_until(lambda: any(t == "media.push.connected" for t, _ in events), 15)
        await wait_until(lambda: push.stats()["packets_sent"] >= 90, 15)  # about 3 s of video
    finally:
        if pipeline is not None:
            pipeline.stop()  # flushes both encoders into the push queue
            for _ in range(100):  # bounded: a push that never connected never drains
                if push.stats()["queue_depth"] == 0:
                    break
                await asyncio.sleep(0.05)
        stats = push.stats()
        push.stop()
        microphone.close()
        camera.close()
        finish_receiver(receiver)
    assert not any(t == "media.push.lost" for t, _ in events), events
    assert stats["audio_sent"] > 100, stats  # 48 kHz AAC: about 47 packets a second
    assert "overflow" not in stats["dropped"], stats
    check_in_sync(received, 2.0)


@pytest.mark.timeout(40)
async def test_after_the_ingest_crashes_the_new_connection_carries_audio_and_video_again(
    tmp_path: Path,
) -> None:
    port = free_port()
    first, second = tmp_path / "first.ts", tmp_path / "second.ts"
    receiver = start_receiver(port, first)
    mcfg = MediaConfig.model_validate(
        {
            "renditions": {
                "main": {"size": "320x240", "fps": 30, "gop": 15, "preset": "ultrafast", "bitrate_kbps": 400}
            },
            "audio": {"source": "lavfi:sine=frequency=440:sample_rate=48000"},
        }
    )
    camera = source_from_spec("main", "lavfi:testsrc2=size=320x240:rate=30", {})
    microphone = AudioSource(mcfg.audio.source)
    events: list[tuple[str, dict]] = []

    async def emit(type_: str, data: dict) -> None:
        events.append((type_, data))

    push = LivePush(
        f"tcp://127.0.0.1:{port}",
        emit=emit,
        on_adapt=lambda step: None,
        backoff_cap_s=0.5,
        loop=asyncio.get_running_loop(),
    )
    pipeline: Pipeline | None = None
    try:
        camera.open()
        microphone.open()
        pipeline = Pipeline({"main": camera}, mcfg, audio=microphone)
        pipeline.attach("main", PushOutput(push))
        pipeline.start()
        await wait_until(lambda: push.stats()["packets_sent"] >= 30, 15)
        receiver.kill()  # kill -9: the platform's ingest crashed
        receiver.wait(5)
        await wait_until(lambda: any(t == "media.push.lost" for t, _ in events), 10)
        receiver = start_receiver(port, second)
        await wait_until(lambda: push.stats()["connects"] >= 2, 10)
        sent = push.stats()["packets_sent"]
        await wait_until(lambda: push.stats()["packets_sent"] >= sent + 60, 15)  # 2 s more
    finally:
        if pipeline is not None:
            pipeline.stop()
            for _ in range(100):
                if push.stats()["queue_depth"] == 0:
                    break
                await asyncio.sleep(0.05)
        push.stop()
        microphone.close()
        camera.close()
        finish_receiver(receiver)
    check_in_sync(second, 1.5)  # the new connection starts both streams afresh, at a keyframe
