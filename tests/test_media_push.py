"""Live push: a technician's script against a real ffmpeg receiver on 127.0.0.1.

The test encodes its own stream (lavfi testsrc2 -> libx264 through PyAV) and feeds it at real-time
pace, as the encoder would. The receiver is the Debian ffmpeg CLI listening on loopback, copying what
it gets into a file that PyAV then decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_media import push_bitstream as bs
from edge_media.push import AdaptStep, LivePush, PushError, PushUnsupported, PushUrlError, StreamParams
from edge_media.push_transport import protocol_available

FPS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Camera:
    """lavfi testsrc2 -> libx264, yielding real ``av.Packet``s; ``global_header`` as an MP4 recorder opens it."""

    def __init__(
        self, *, global_header: bool = False, size: str = "320x240", gop: int = 15, x264: str = ""
    ) -> None:
        w, h = map(int, size.split("x"))
        self.encoder = av.CodecContext.create("libx264", "w")
        self.encoder.width, self.encoder.height, self.encoder.pix_fmt = w, h, "yuv420p"
        self.encoder.time_base = Fraction(1, FPS)
        self.encoder.framerate = FPS
        self.encoder.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "g": str(gop),
            **({"x264-params": x264} if x264 else {}),
        }
        if global_header:
            self.encoder.flags |= av.codec.context.Flags.global_header
        self.encoder.open()
        self.source = av.open(f"testsrc2=size={size}:rate={FPS}", format="lavfi")
        self.frames = self.source.decode(video=0)
        self.n = 0

    def packets(self) -> list[av.Packet]:
        frame = next(self.frames)
        frame.pts, frame.time_base = self.n, self.encoder.time_base
        frame.pict_type = av.video.frame.PictureType.NONE  # lavfi marks every frame I: x264 would obey
        self.n += 1
        return self.encoder.encode(frame)

    def close(self) -> None:
        self.source.close()


async def feed(
    push: LivePush,
    camera: Camera,
    seconds: float,
    *,
    max_send_s: list[float] | None = None,
    until: asyncio.Event | None = None,
) -> None:
    """Real-time pace for ``seconds`` (or until ``until`` is set); records the slowest ``send`` call."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until.is_set()):
        for pkt in camera.packets():
            t = time.perf_counter()
            push.send(pkt)
            if max_send_s is not None:
                max_send_s[0] = max(max_send_s[0], time.perf_counter() - t)
        await asyncio.sleep(1 / FPS)


def listening(port: int, proto: str = "tcp") -> bool:
    """Is something listening (TCP) or bound (UDP) on port? Read from /proc, without connecting."""
    wanted = "0A" if proto == "tcp" else "07"
    for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == wanted and int(local.split(":")[1], 16) == port:
            return True
    return False


class Receiver:
    """``ffmpeg -i tcp://...?listen=1 -c copy out.ts`` (or RTSP in listen mode), restartable on one port."""

    def __init__(self, workdir: Path, kind: str = "tcp") -> None:
        self.workdir, self.kind = workdir, kind
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.outputs: list[Path] = []

    @property
    def url(self) -> str:
        return {
            "tcp": f"tcp://127.0.0.1:{self.port}",
            "udp": f"udp://127.0.0.1:{self.port}",
            "rtsp": f"rtsp://127.0.0.1:{self.port}/live",
            "rtmp": f"rtmp://127.0.0.1:{self.port}/live/kiosk-0001",
        }[self.kind]

    def start(self) -> None:
        out = self.workdir / f"received-{len(self.outputs)}.ts"
        self.outputs.append(out)
        src = {
            "tcp": ["-f", "mpegts", "-i", f"tcp://127.0.0.1:{self.port}?listen=1"],
            # UDP has no end: a read timeout (µs) ends the receiver once the push stops sending
            "udp": ["-f", "mpegts", "-i", f"udp://127.0.0.1:{self.port}?timeout=700000"],
            "rtsp": ["-rtsp_flags", "listen", "-i", self.url],
            "rtmp": ["-listen", "1", "-f", "flv", "-i", self.url],
        }[self.kind]
        self.proc = subprocess.Popen(
            [
                "ffmpeg",
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-probesize",
                "32768",
                "-analyzeduration",
                "0",
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
        for _ in range(200):  # wait until it listens (a probe connection would use up its one accept)
            if listening(self.port, "udp" if self.kind == "udp" else "tcp"):
                return
            time.sleep(0.025)
        raise RuntimeError("receiver did not start listening")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def finish(self) -> None:
        if self.proc and self.proc.poll() is None:
            if self.kind != "udp":  # a UDP reader ignores SIGINT while blocked; its read timeout ends it
                self.proc.send_signal(signal.SIGINT)  # let it close the file cleanly
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def decoded_frames(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return len(frames), (frames[0].width, frames[0].height) if frames else (0, 0)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []
        self.changed = asyncio.Event()

    async def __call__(self, type_: str, data: dict) -> None:
        self.seen.append((type_, data))
        self.changed.set()

    def of(self, type_: str) -> list[dict]:
        return [d for t, d in self.seen if t == type_]

    async def wait_for(
        self, type_: str, count: int = 1, timeout_s: float = 10.0, done: asyncio.Event | None = None
    ) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        try:
            while len(self.of(type_)) < count and time.monotonic() < deadline:
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
        finally:
            if done is not None:
                done.set()
        assert len(self.of(type_)) >= count, f"no {count}x {type_} within {timeout_s}s: {self.seen}"
        return self.of(type_)


async def feed_until(
    push: LivePush,
    camera: Camera,
    events: Events,
    type_: str,
    count: int = 1,
    timeout_s: float = 10.0,
    max_send_s: list[float] | None = None,
) -> list[dict]:
    """Keep the camera running until ``count`` events of ``type_`` arrived (at most ``timeout_s``)."""
    done = asyncio.Event()
    _, got = await asyncio.gather(
        feed(push, camera, timeout_s, max_send_s=max_send_s, until=done),
        events.wait_for(type_, count, timeout_s, done=done),
    )
    return got


@pytest.fixture(params=["tcp"])
def receiver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(tmp_path, request.param)
    try:
        yield r
    finally:
        r.kill()


@pytest.fixture
def camera() -> Iterator[Camera]:
    c = Camera()
    yield c
    c.close()


FAST_RETRY = {"backoff_base_s": 0.05, "backoff_cap_s": 0.5, "connect_timeout_s": 1, "write_timeout_s": 1}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("receiver", ["tcp", "udp"], indirect=True)
async def test_packets_reach_a_tcp_or_udp_receiver_and_decode(receiver: Receiver, camera: Camera) -> None:
    receiver.start()
    events = Events()
    push = LivePush(receiver.url, emit=events, on_adapt=lambda step: None, **FAST_RETRY)
    push.start(camera.encoder)
    try:
        await feed(push, camera, 2.0)
        await asyncio.sleep(0.3)
        stats = push.stats()
    finally:
        push.stop()
    await asyncio.sleep(0.1)  # let any event the stop caused arrive: there must be none
    receiver.finish()
    frames, size = decoded_frames(receiver.outputs[0])
    assert size == (320, 240) and frames >= 1.5 * FPS
    assert stats["state"] == "connected" and stats["bytes_sent"] > 10_000 and stats["reconnects"] == 0
    [connected] = events.of("media.push.connected")
    assert connected["url"] == receiver.url and not events.of("media.push.lost")
    assert push.stats()["state"] == "stopped"


@pytest.mark.timeout(40)
async def test_the_push_comes_back_after_the_receiver_is_killed_and_restarted(
    tmp_path: Path, receiver: Receiver
) -> None:
    camera = Camera(global_header=True)  # parameter sets only in extradata: the push must re-insert them
    receiver.start()
    events = Events()
    push = LivePush(receiver.url, emit=events, on_adapt=lambda step: None, **FAST_RETRY)
    push.start(camera.encoder)
    slowest = [0.0]
    try:
        await feed(push, camera, 1.0, max_send_s=slowest)
        receiver.kill()  # kill -9: the platform's ingest crashed
        await feed_until(push, camera, events, "media.push.lost", timeout_s=5, max_send_s=slowest)
        await feed(push, camera, 1.0, max_send_s=slowest)  # nobody listens for a while
        assert push.stats()["state"] in ("retrying", "connecting") and push.stats()["failed_attempts"] >= 1
        receiver.start()
        await feed_until(push, camera, events, "media.push.connected", 2, timeout_s=5, max_send_s=slowest)
        await feed(push, camera, 1.0, max_send_s=slowest)
        stats = push.stats()
    finally:
        push.stop()
        camera.close()
    receiver.finish()
    assert stats["reconnects"] == 1 and stats["failed_attempts"] >= 1
    lost = events.of("media.push.lost")[0]
    assert lost["was_connected"] and lost["error"]
    assert len(events.of("media.push.lost")) == 1  # one event per outage, however many retries
    frames, size = decoded_frames(receiver.outputs[1])  # the new receiver can decode from its first packet
    assert size == (320, 240) and frames >= FPS // 2
    assert slowest[0] < 0.1, f"send() took {slowest[0] * 1000:.1f} ms"


@pytest.mark.timeout(30)
async def test_a_push_that_cannot_connect_never_blocks_send(camera: Camera) -> None:
    events = Events()
    push = LivePush(
        f"tcp://127.0.0.1:{free_port()}",
        emit=events,
        on_adapt=lambda step: None,
        queue_packets=32,
        **FAST_RETRY,
    )
    push.start(StreamParams.of(camera.encoder))
    slowest = 0.0
    try:
        for _ in range(4 * FPS):  # as fast as the encoder can go, not paced
            for pkt in camera.packets():
                t = time.perf_counter()
                push.send(pkt)
                slowest = max(slowest, time.perf_counter() - t)
        await events.wait_for("media.push.lost")
        await asyncio.sleep(0.3)
        stats = push.stats()
    finally:
        push.stop()
    assert slowest < 0.1
    assert stats["queue_depth"] <= 32 and stats["dropped"].get("overflow", 0) > 0
    assert stats["state"] in ("retrying", "connecting") and stats["failed_attempts"] >= 2
    assert len(events.of("media.push.lost")) == 1 and not events.of("media.push.connected")


@pytest.mark.timeout(30)
async def test_a_receiver_that_stops_reading_is_noticed_and_left(camera: Camera) -> None:
    """It accepts, then reads nothing: writes time out, the push reports the loss and retries."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    events = Events()
    big = Camera(size="640x480", gop=2)  # big packets fill the socket buffers quickly
    push = LivePush(
        f"tcp://127.0.0.1:{listener.getsockname()[1]}",
        emit=events,
        on_adapt=lambda s: None,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
        connect_timeout_s=1,
        write_timeout_s=0.5,
    )
    push.start(big.encoder)
    try:
        await feed_until(push, big, events, "media.push.lost", timeout_s=8)
        lost = events.of("media.push.lost")[0]
        assert lost["was_connected"] and "timed out" in lost["error"]
    finally:
        push.stop()
        big.close()
        stop.set()
        thread.join(5)
        for s in accepted:
            s.close()
        listener.close()


@pytest.mark.timeout(30)
async def test_a_receiver_speaking_garbage_does_not_hurt_the_push(camera: Camera) -> None:
    """A TCP peer that babbles and hangs up, and an "RTSP server" that answers nonsense."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def babble() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"RTSP/9.9 999 WHAT\r\nCSeq: banana\r\n\r\n\xff\x00" * 50)
                time.sleep(0.2)

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        for url in (f"tcp://127.0.0.1:{port}", f"rtsp://127.0.0.1:{port}/live"):
            events = Events()
            push = LivePush(url, emit=events, on_adapt=lambda s: None, **FAST_RETRY)
            push.start(camera.encoder)
            try:
                await feed_until(push, camera, events, "media.push.lost", timeout_s=5)
                assert push.stats()["last_error"]
                assert push.stats()["state"] in ("retrying", "connecting", "connected")
            finally:
                push.stop()
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["rtsp", "rtmp"])
async def test_rtsp_and_rtmp_receivers_get_a_decodable_stream(
    tmp_path: Path, camera: Camera, kind: str
) -> None:
    receiver = Receiver(tmp_path, kind=kind)
    receiver.start()
    events = Events()
    push = LivePush(receiver.url, emit=events, on_adapt=lambda s: None, **FAST_RETRY)
    push.start(camera.encoder)
    try:
        await feed_until(push, camera, events, "media.push.connected", timeout_s=5)
        await feed(push, camera, 1.5)
    finally:
        push.stop()
        receiver.finish()
        receiver.kill()
    frames, size = decoded_frames(receiver.outputs[0])
    assert size == (320, 240) and frames >= FPS


@pytest.mark.timeout(40)
async def test_a_slow_link_steps_down_and_a_drained_queue_steps_back_up(camera: Camera) -> None:
    """A receiver that reads 40 kB/s, then at full speed: bitrate steps down, then up again."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    rate = {"bytes_per_s": 40_000}
    stop = threading.Event()

    def slow_reader() -> None:
        listener.settimeout(2)
        with contextlib.suppress(TimeoutError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(0.2)
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        conn.recv(1024 if rate["bytes_per_s"] else 1 << 20)
                    if rate["bytes_per_s"]:
                        time.sleep(1024 / rate["bytes_per_s"])

    thread = threading.Thread(target=slow_reader, daemon=True)
    thread.start()
    steps: list[AdaptStep] = []
    events = Events()
    push = LivePush(
        f"tcp://127.0.0.1:{listener.getsockname()[1]}",
        emit=events,
        on_adapt=steps.append,
        queue_packets=120,
        down_at=20,
        up_at=2,
        settle_s=0.3,
        up_after_s=0.6,
        write_timeout_s=10,
        connect_timeout_s=1,
        send_buffer_bytes=8192,
    )
    push.start(camera.encoder)
    try:
        await feed_until(push, camera, events, "media.push.adapted", 2, timeout_s=10)
        assert [s.direction for s in steps[:2]] == ["down", "down"]
        assert steps[0].bitrate_factor < 1.0 and steps[0].resolution_factor == 1.0  # bitrate goes first
        lowest = max(s.level for s in steps)
        rate["bytes_per_s"] = 0  # the link recovers
        await feed_until(push, camera, events, "media.push.adapted", len(steps) + 1, timeout_s=10)
        assert steps[-1].direction == "up" and steps[-1].level == lowest - 1
        assert [e["level"] for e in events.of("media.push.adapted")] == [s.level for s in steps]
    finally:
        push.stop()
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:21/live",
        "http://127.0.0.1/live",
        "tcp://127.0.0.1",
        "tcp://:9000",
        "tcp://127.0.0.1:99999",
        "udp://127.0.0.1:12 3",
        "",
        None,
        42,
        "rtmp://127.0.0.1/live\r\nX-Injected: 1",
        "file:///etc/passwd",
    ],
)
def test_a_bad_push_url_is_refused_at_once(url: object) -> None:
    with pytest.raises(PushUrlError):
        LivePush(url, emit=Events(), on_adapt=lambda s: None)  # type: ignore[arg-type]


def test_srt_is_refused_clearly_when_this_ffmpeg_lacks_it() -> None:
    if protocol_available("srt"):
        LivePush("srt://127.0.0.1:9000?mode=caller", emit=Events(), on_adapt=lambda s: None)
    else:
        with pytest.raises(PushUnsupported, match="libsrt"):
            LivePush("srt://127.0.0.1:9000?mode=caller", emit=Events(), on_adapt=lambda s: None)


async def test_start_twice_is_an_error_and_stop_is_idempotent(camera: Camera) -> None:
    push = LivePush(f"tcp://127.0.0.1:{free_port()}", emit=Events(), on_adapt=lambda s: None, **FAST_RETRY)
    push.start(camera.encoder)
    with pytest.raises(PushError):
        push.start(camera.encoder)
    t = time.monotonic()
    push.stop()
    push.stop()
    assert time.monotonic() - t < 2
    with pytest.raises(PushError):
        push.start(av.AudioResampler())  # not a video stream


class Ingest:
    """A TCP MPEG-TS ingest on one fixed port that can go away (listener and connection closed)
    and come back. Each connection's bytes go to their own file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.files: list[Path] = []
        self.listening_at: float | None = None  # monotonic: listen() returned
        self.first_byte_at: list[float] = []  # monotonic, per connection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._stop.clear()
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: same port again
        listener.settimeout(0.05)
        self.listening_at = time.monotonic()
        self._thread = threading.Thread(target=self._serve, args=(listener,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The ingest goes away: no more listening, the open connection is dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            assert not self._thread.is_alive()
            self._thread = None

    def _serve(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                path = self.workdir / f"connection-{len(self.files)}.ts"
                self.files.append(path)
                conn.settimeout(0.05)
                with conn, open(path, "wb") as f:
                    while not self._stop.is_set():
                        try:
                            data = conn.recv(65536)
                        except TimeoutError:
                            continue
                        except OSError:
                            break
                        if not data:
                            break
                        if len(self.first_byte_at) < len(self.files):
                            self.first_byte_at.append(time.monotonic())
                        f.write(data)


@pytest.mark.timeout(30)
async def test_a_new_resolution_from_the_encoder_reconnects_with_the_new_stream(
    tmp_path: Path, camera: Camera
) -> None:
    collector = Ingest(tmp_path)
    collector.start()
    events = Events()
    push = LivePush(collector.url, emit=events, on_adapt=lambda s: None, **FAST_RETRY)
    push.start(camera.encoder)
    smaller = Camera(size="160x120", global_header=True)
    try:
        await feed_until(push, camera, events, "media.push.connected", timeout_s=5)
        await feed(push, camera, 1.0)
        push.update_stream(smaller.encoder)  # what the encoder does after an AdaptStep with a smaller size
        await feed_until(push, smaller, events, "media.push.connected", 2, timeout_s=5)
        await feed(push, smaller, 1.0)
        stats = push.stats()
    finally:
        push.stop()
        smaller.close()
        collector.stop()
    assert stats["connects"] == 2 and not events.of("media.push.lost")
    assert decoded_frames(collector.files[0])[1] == (320, 240)
    frames, size = decoded_frames(collector.files[1])
    assert size == (160, 120) and frames >= FPS // 2


# --- the pure byte helpers ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300),
    extradata=st.one_of(st.none(), st.binary(max_size=60)),
    codec=st.sampled_from(["libx264", "hevc", "libx265", "mjpeg"]),
)
def test_garbage_bytes_never_break_the_keyframe_fix_up(
    data: bytes, extradata: bytes | None, codec: str
) -> None:
    family = bs.codec_family(codec)
    sets = bs.parameter_sets(extradata, family)
    out = bs.joinable_keyframe(data, sets, family)
    assert out == data or out == (sets or b"") + data
    list(bs.nal_units(data))
    bs.avcc_to_annexb(data)


def test_an_avcc_record_from_a_real_mp4_becomes_annexb_sps_and_pps(tmp_path: Path, camera: Camera) -> None:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_mux_stream("h264", rate=FPS, width=320, height=240)
        stream.time_base = Fraction(1, FPS)
        for _ in range(5):
            for pkt in camera.packets():
                pkt.stream = stream
                out.mux(pkt)
    with av.open(str(path)) as c:
        avcc = bytes(c.streams.video[0].codec_context.extradata)
    assert avcc[0] == 1  # MP4 keeps avcC, not Annex B
    annexb = bs.parameter_sets(avcc, "h264")
    assert annexb is not None
    assert [bs.nal_type(u, "h264") for u in bs.nal_units(annexb)] == [7, 8]
    idr_without_sets = b"\x00\x00\x00\x01\x65\x88\x84"
    assert bs.joinable_keyframe(idr_without_sets, annexb, "h264") == annexb + idr_without_sets
    assert bs.joinable_keyframe(annexb + idr_without_sets, annexb, "h264") == annexb + idr_without_sets
    assert bs.avcc_to_annexb(avcc[:-3]) is None  # a truncated record is refused, not half-used
