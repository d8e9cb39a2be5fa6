"""Live push of the encoded video to the platform, never at the recording's expense.

``LivePush.send(packet)`` copies the packet into a bounded queue and returns at once; a sender
thread owns the connection (see ``push_transport`` for the URL schemes), reconnects with full-jitter
backoff from ``backoff_base_s`` (250 ms) doubling to ``backoff_cap_s`` (30 s), and reports
``media.push.connected`` / ``media.push.lost``. Nothing the network does can block or fail ``send``.
For tcp:// the wait between attempts is cut short: the sender connects every ``probe_interval_s``
(250 ms) and the first connection the ingest accepts becomes the stream's (``_wait_or_probe``).

Queue policy when full: the oldest GOP goes (the head packet and everything up to the next
keyframe), because packets after a missing reference are undecodable anyway. If the queue holds no
second keyframe, it is emptied and non-keyframes are dropped until the next keyframe arrives. After
a (re)connect the sender starts at the newest queued keyframe: live video that is seconds old is
worth less than the link capacity it would take.

Adaptation: while connected, a queue that reaches ``down_at`` packets means the link carries less
than the encoder makes, so the push steps down the ``LADDER`` (bitrate first, then resolution),
waiting ``settle_s`` between steps for the queue to react. A queue at or below ``up_at`` for
``up_after_s`` steps back up one rung. Each step calls ``on_adapt(AdaptStep)`` in the thread that
called ``send`` (the encoder's, so it can apply the step before its next frame) and emits
``media.push.adapted``. A resolution change is the encoder's to make; it then calls
``update_stream`` with the new stream so the push reopens its connection with the new parameters.

Audio: after ``add_audio(encoder)`` (an ``AudioEncoder``, on the video's timeline) every connection
carries a second, AAC stream and ``send_audio(packet)`` queues its packets in the same queue, in
arrival order. They follow the video's fate: a dropped GOP takes the audio queued in its span with it,
audio waits for the first keyframe like video does, and a (re)connect starts at a video keyframe and
skips audio from before it. Both are shifted by the same origin (the first video DTS) in seconds, so
they stay in sync. Adaptation counts video packets only; the queue bound counts all packets.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from edge_media.push_bitstream import codec_family, joinable_keyframe, parameter_sets
from edge_media.push_transport import (
    Connection,
    LinkDown,
    PushError,
    PushUnsupported,
    PushUrlError,
    QueuedPacket,
    Target,
    parse_target,
    probe_tcp,
)
from kiosk_core.backoff import full_jitter

__all__ = [
    "LADDER",
    "AdaptStep",
    "LivePush",
    "PushError",
    "PushUnsupported",
    "PushUrlError",
    "StreamParams",
    "LinkDown",
]

log = logging.getLogger("kiosk.media.push")

EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]

# (bitrate factor, resolution factor) per level: bitrate first, then resolution.
LADDER: tuple[tuple[float, float], ...] = (
    (1.0, 1.0),
    (0.75, 1.0),
    (0.5, 1.0),
    (0.35, 1.0),
    (0.35, 0.75),
    (0.25, 0.5),
)


@dataclass(frozen=True)
class StreamParams:
    """What the receiver needs to know about the encoded video stream."""

    codec: str  # codec or encoder name, e.g. "h264", "libx264", "hevc", "h264_v4l2m2m"
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None = None
    extradata: bytes | None = None
    bit_rate: int | None = None

    @classmethod
    def of(cls, template: Any) -> StreamParams:
        """From ``StreamParams``, an encoder's ``av`` video stream, or an ``av`` ``VideoCodecContext``."""
        if isinstance(template, StreamParams):
            return template
        ctx = getattr(template, "codec_context", template)
        try:
            codec = ctx.codec.name
            width, height = int(ctx.width), int(ctx.height)
            time_base = ctx.time_base or getattr(template, "time_base", None)
            rate = ctx.framerate or getattr(template, "average_rate", None)
            extradata = bytes(ctx.extradata) if ctx.extradata else None
            bit_rate = int(ctx.bit_rate) if ctx.bit_rate else None
        except AttributeError as e:
            raise PushError(f"cannot take stream parameters from {type(template).__name__}: {e}") from None
        if ctx.type != "video" or not width or not height or not time_base:
            raise PushError(
                f"push needs a video stream with size and time base, got {ctx.type} "
                f"{width}x{height} time_base={time_base}"
            )
        return cls(
            codec, width, height, Fraction(time_base), Fraction(rate) if rate else None, extradata, bit_rate
        )


@dataclass(frozen=True)
class AdaptStep:
    level: int  # 0 = as configured; len(LADDER) - 1 = lowest
    direction: str  # "down" | "up"
    bitrate_factor: float
    resolution_factor: float
    bit_rate: int | None  # absolute, when the stream's nominal bitrate is known
    width: int  # even, as encoders need
    height: int
    queue_depth: int


class _EventRelay:
    """Hands events from any thread to the async ``emit``, in order, one at a time (bounded)."""

    def __init__(self, emit: EventSink, loop: asyncio.AbstractEventLoop | None, limit: int = 256) -> None:
        self.emit = emit
        self.loop = loop
        self.pending: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=limit)
        self._draining = False
        self._task: asyncio.Future[None] | None = None  # held: the loop keeps only weak task references

    def post(self, type_: str, data: dict[str, Any]) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            log.info("push event %s %s (no event loop to emit on)", type_, data)
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, type_, data)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def _enqueue(self, type_: str, data: dict[str, Any]) -> None:
        self.pending.append((type_, data))
        if not self._draining:
            self._draining = True
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self.pending:
                type_, data = self.pending.popleft()
                try:
                    await self.emit(type_, data)
                except Exception:
                    log.exception("could not emit %s", type_)
        finally:
            self._draining = False


class LivePush:
    """Push one encoded video stream to ``url``. ``send`` is safe from any thread and never blocks."""

    def __init__(
        self,
        url: str,
        *,
        emit: EventSink,
        on_adapt: Callable[[AdaptStep], None],
        queue_packets: int = 240,
        down_at: int | None = None,
        up_at: int | None = None,
        settle_s: float = 2.0,
        up_after_s: float = 10.0,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 30.0,
        stable_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        write_timeout_s: float = 5.0,
        send_buffer_bytes: int | None = 64 * 1024,
        probe_interval_s: float = 0.25,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.target: Target = parse_target(url)  # PushUrlError / PushUnsupported right here
        if queue_packets < 8:
            raise ValueError("queue_packets must be at least 8")
        self.queue_packets = queue_packets
        self.down_at = down_at if down_at is not None else max(4, queue_packets // 5)
        self.up_at = up_at if up_at is not None else max(1, self.down_at // 6)
        if not 0 <= self.up_at < self.down_at <= queue_packets:
            raise ValueError("need 0 <= up_at < down_at <= queue_packets")
        self.settle_s, self.up_after_s = settle_s, up_after_s
        self.backoff_base_s, self.backoff_cap_s, self.stable_s = backoff_base_s, backoff_cap_s, stable_s
        self.connect_timeout_s, self.write_timeout_s = connect_timeout_s, write_timeout_s
        self.send_buffer_bytes = send_buffer_bytes
        self.probe_interval_s = probe_interval_s
        self._emit = emit
        self._on_adapt = on_adapt
        self._loop = loop
        self._events: _EventRelay | None = None

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[QueuedPacket] = collections.deque()
        self._keys_queued = 0
        self._audio_queued = 0
        self._audio: Any = None  # an AudioEncoder after add_audio: connections then carry AAC too
        self._need_key = True
        self._generation = 0
        self._params: StreamParams | None = None
        self._sets: bytes | None = None
        self._family: str | None = None

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conn: Connection | None = None
        self._state = "idle"
        self._level = 0
        self._current: AdaptStep | None = None
        self._last_step_at = 0.0
        self._low_since: float | None = None
        self._counters = collections.Counter[str]()
        self._last_error: str | None = None

    # --- control ---------------------------------------------------------------------------------

    def start(self, stream_params: Any) -> None:
        """Start pushing the stream described by ``stream_params`` (see ``StreamParams.of``).

        Checks that the container can carry the codec (``PushUnsupported``) before any network I/O.
        Call it on the event loop, or pass ``loop=`` to the constructor, so events can be emitted.
        """
        with self._lock:
            if self._thread is not None:
                raise PushError(f"push to {self.target.shown} is already running")
        self._set_params(StreamParams.of(stream_params))
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                log.warning("LivePush started without an event loop: its events will only be logged")
        self._events = _EventRelay(self._emit, self._loop)
        self._stopping = threading.Event()  # a fresh one per run (see _run)
        self._state = "connecting"
        self._thread = threading.Thread(
            target=self._run, args=(self._stopping,), name=f"push {self.target.shown}", daemon=True
        )
        self._thread.start()

    def add_audio(self, encoder: Any) -> None:
        """Carry an AAC stream from ``encoder`` (``template``, ``extradata``, ``time_base``) beside the
        video on every connection made from now on; feed it with ``send_audio``."""
        self._audio = encoder

    def update_stream(self, stream_params: Any) -> None:
        """The encoder changed the stream (e.g. resolution): reconnect with it at its next keyframe."""
        self._set_params(StreamParams.of(stream_params))
        with self._lock:
            self._drop_all("restream")
            self._need_key = True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the sender and drop the queue. Idempotent; blocks at most ``timeout_s``."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        conn = self._conn
        if conn is not None:
            conn.abort()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning(
                    "push sender to %s did not stop within %.1f s (blocked in FFmpeg); abandoned",
                    self.target.shown,
                    timeout_s,
                )
        with self._lock:
            self._drop_all("stopped")
        self._state = "stopped"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            depth = len(self._queue)
            audio_depth = self._audio_queued
        conn = self._conn
        bytes_now = conn.bytes_sent if conn is not None else 0
        return {
            "url": self.target.shown,
            "state": self._state,
            "queue_depth": depth,
            "queue_packets": self.queue_packets,
            "bytes_sent": self._counters["bytes"] + bytes_now,
            "packets_sent": self._counters["packets"],
            "connects": self._counters["connects"],
            "reconnects": max(0, self._counters["connects"] - 1),
            "failed_attempts": self._counters["failed"],
            "probes": self._counters["probes"] + self._counters["probe_hits"],
            "dropped": {k[5:]: v for k, v in self._counters.items() if k.startswith("drop.")},
            "level": self._level,
            "step": asdict(self._current) if self._current else None,
            "last_error": self._last_error,
            **(
                {"audio_queued": audio_depth, "audio_sent": self._counters["audio_packets"]}
                if self._audio is not None
                else {}
            ),
        }

    # --- the encoder's side --------------------------------------------------------------------

    def send(self, packet: Any) -> None:
        """Queue a copy of an encoded video packet. Never blocks on the network, never raises for it."""
        if self._thread is None or self._stopping.is_set():
            return
        if packet.pts is None and packet.dts is None:
            return  # a flush packet carries nothing to show
        key = bool(packet.is_keyframe)
        data = bytes(packet)
        if key:
            data = joinable_keyframe(data, self._sets, self._family)
        tb = packet.time_base or (self._params.time_base if self._params else None)
        if tb is None:
            return
        item = QueuedPacket(
            data, packet.pts, packet.dts, packet.duration or 0, Fraction(tb), key, self._generation
        )
        with self._lock:
            if self._need_key and not key:
                self._counters["drop.waiting_keyframe"] += 1
                return
            self._need_key = False
            if len(self._queue) >= self.queue_packets:
                self._drop_oldest_gop()
                if not self._queue and not key:
                    self._need_key = True
                    self._counters["drop.waiting_keyframe"] += 1
                    return
            self._queue.append(item)
            self._keys_queued += key
            depth = len(self._queue) - self._audio_queued
            self._wake.notify()
        self._adapt(depth)

    def send_audio(self, packet: Any) -> None:
        """Queue a copy of an encoded AAC packet (pts in its ``time_base``, the video's timeline).
        Ignored until ``add_audio``; never blocks, never raises for the network."""
        if self._audio is None or self._thread is None or self._stopping.is_set():
            return
        if packet.pts is None or packet.time_base is None:
            return
        item = QueuedPacket(
            bytes(packet),
            packet.pts,
            packet.dts,
            packet.duration or 0,
            Fraction(packet.time_base),
            False,
            self._generation,
            audio=True,
        )
        with self._lock:
            if self._need_key:
                self._counters["drop.audio_waiting_keyframe"] += 1
                return
            if len(self._queue) >= self.queue_packets:
                self._drop_oldest_gop()
                if not self._queue:  # no keyframe left to start from: audio waits for the next one too
                    self._need_key = True
                    self._counters["drop.audio_waiting_keyframe"] += 1
                    return
            self._queue.append(item)
            self._audio_queued += 1
            self._wake.notify()

    # --- queue (caller holds the lock) ------------------------------------------------------------

    def _pop(self) -> QueuedPacket:
        head = self._queue.popleft()
        self._keys_queued -= head.key
        self._audio_queued -= head.audio
        return head

    def _drop_oldest_gop(self) -> None:
        """The head packet and everything up to the next video keyframe, audio in that span included."""
        q = self._queue
        dropped = 0
        while q:
            self._pop()
            dropped += 1
            if q and q[0].key:
                break
        self._counters["drop.overflow"] += dropped

    def _drop_all(self, why: str) -> None:
        self._counters[f"drop.{why}"] += len(self._queue)
        self._queue.clear()
        self._keys_queued = 0
        self._audio_queued = 0

    def _skip_to_newest_keyframe(self) -> None:
        q = self._queue
        while self._keys_queued > 1 or (q and not q[0].key):
            self._pop()
            self._counters["drop.stale"] += 1

    # --- adaptation ------------------------------------------------------------------------------

    def _step(self, level: int, direction: str, depth: int) -> AdaptStep:
        bitrate_factor, resolution_factor = LADDER[level]
        p = self._params
        assert p is not None
        return AdaptStep(
            level=level,
            direction=direction,
            bitrate_factor=bitrate_factor,
            resolution_factor=resolution_factor,
            bit_rate=int(p.bit_rate * bitrate_factor) if p.bit_rate else None,
            width=max(2, int(p.width * resolution_factor) // 2 * 2),
            height=max(2, int(p.height * resolution_factor) // 2 * 2),
            queue_depth=depth,
        )

    def _adapt(self, depth: int) -> None:
        if self._state != "connected":
            self._low_since = None
            return  # an absent link is not a slow link: reconnecting is the answer, not a lower bitrate
        now = time.monotonic()
        new_level = self._level
        if depth >= self.down_at:
            self._low_since = None
            if self._level < len(LADDER) - 1 and now - self._last_step_at >= self.settle_s:
                new_level = self._level + 1
        elif depth <= self.up_at:
            if self._low_since is None:
                self._low_since = now
            elif (
                self._level > 0
                and now - self._low_since >= self.up_after_s
                and now - self._last_step_at >= self.up_after_s
            ):
                new_level = self._level - 1
                self._low_since = now
        else:
            self._low_since = None
        if new_level == self._level:
            return
        step = self._step(new_level, "down" if new_level > self._level else "up", depth)
        self._level, self._current, self._last_step_at = new_level, step, now
        log.info(
            "push to %s: queue %d, stepping %s to level %d",
            self.target.shown,
            depth,
            step.direction,
            new_level,
        )
        try:
            self._on_adapt(step)
        except Exception:
            log.exception("on_adapt failed for %s", step)
        self._post("media.push.adapted", {"url": self.target.shown, **asdict(step)})

    # --- the sender thread ---------------------------------------------------------------------

    def _set_params(self, params: StreamParams) -> None:
        import io

        import av

        if self.target.container == "flv" and codec_family(params.codec) == "hevc":
            # FFmpeg would write "enhanced RTMP", which common ingests cannot decode (edge_media/config.py)
            raise PushUnsupported(
                f"H.265 over {self.target.scheme}:// is 'enhanced RTMP', which common ingests (Debian's "
                "ffmpeg 5.1, nginx-rtmp) cannot decode; push H.265 to tcp:// (MPEG-TS), rtsp:// or srt://"
            )
        try:  # can the container carry the codec? Fail in the caller's thread, not in a retry loop.
            probe = av.open(
                io.BytesIO(),
                "w",
                format="mpegts" if self.target.container == "rtsp" else self.target.container,
            )
            try:
                probe.add_mux_stream(params.codec, width=params.width, height=params.height)
            finally:
                probe.close()
        except ValueError as e:
            raise PushUnsupported(f"{self.target.container} cannot carry {params.codec}: {e}") from None
        self._family = codec_family(params.codec)
        self._sets = parameter_sets(params.extradata, self._family)
        with self._lock:
            self._params = params
            self._generation += 1

    def _post(self, type_: str, data: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.post(type_, data)

    def _next(self, conn_generation: int | None, stopping: threading.Event) -> QueuedPacket | None:
        """Wait (bounded) for the next packet to send. On a fresh connection: the newest keyframe."""
        with self._wake:
            if not self._queue:
                self._wake.wait(0.25)
            if not self._queue or stopping.is_set():
                return None
            if conn_generation is None:
                self._skip_to_newest_keyframe()
                if not self._queue:
                    return None
            return self._pop()

    def _run(self, stopping: threading.Event) -> None:
        """The sender thread. ``stopping`` is this run's own: a thread abandoned by ``stop()`` (blocked
        in FFmpeg) that wakes up later finds it set and leaves without touching a newer run."""
        failures = 0
        lost_reported = False
        probed: socket.socket | None = None  # a tcp:// connection the probe made, handed to the next open
        while not stopping.is_set():
            restream = False
            item = self._next(None, stopping)  # nothing to send: do not connect
            if item is None:
                if probed is not None:  # the queue emptied meanwhile; connect again when there is video
                    probed.close()
                    probed = None
                continue
            params = self._params
            assert params is not None
            conn = Connection(
                self.target,
                params,
                connect_timeout_s=self.connect_timeout_s,
                write_timeout_s=self.write_timeout_s,
                send_buffer_bytes=self.send_buffer_bytes,
                audio=self._audio,
            )
            self._conn = conn
            connected_at = None
            try:
                connected, probed = probed, None
                conn.open(connected)
                conn.send(item)
                connected_at = time.monotonic()
                self._state = "connected"
                self._counters["connects"] += 1
                self._counters["packets"] += 1
                lost_reported = False
                self._post(
                    "media.push.connected",
                    {
                        "url": self.target.shown,
                        "attempts": failures + 1,
                        "reconnect": self._counters["connects"] > 1,
                    },
                )
                restream = self._pump(conn, item.generation, stopping)
            except Exception as e:  # noqa: BLE001 - the sender must outlive any FFmpeg surprise
                if stopping.is_set():
                    break  # stop() aborted the connection: that is no loss to report
                if not isinstance(e, PushError):
                    log.exception("push sender error")
                self._last_error = str(e) if isinstance(e, PushError) else f"{type(e).__name__}: {e}"
                if connected_at is None:
                    self._counters["failed"] += 1
                if not lost_reported:  # one event per outage, not one per retry
                    lost_reported = True
                    self._post(
                        "media.push.lost",
                        {
                            "url": self.target.shown,
                            "error": self._last_error,
                            "was_connected": connected_at is not None,
                            "connected_s": round(time.monotonic() - connected_at, 3)
                            if connected_at
                            else None,
                        },
                    )
            finally:
                if self._conn is conn:
                    self._conn = None
                self._counters["bytes"] += conn.bytes_sent
                conn.close()
            if stopping.is_set():
                break
            if restream:
                continue  # update_stream: reconnect at once with the new parameters
            if connected_at is not None and time.monotonic() - connected_at >= self.stable_s:
                failures = 0
            self._state = "retrying"
            delay = full_jitter(failures, self.backoff_base_s, self.backoff_cap_s)
            failures += 1
            probed = self._wait_or_probe(delay, stopping)
        if probed is not None:
            probed.close()

    def _wait_or_probe(self, delay: float, stopping: threading.Event) -> socket.socket | None:
        """Wait out the backoff's ``delay``; for tcp:// connect every ``probe_interval_s`` meanwhile and
        end the wait with the connected socket the moment the ingest accepts. A refused or unanswered
        connect costs one SYN, and the socket that succeeds becomes the stream's, so the ingest sees
        no extra connection. FFmpeg-owned schemes (rtmp, rtsp, srt) keep the plain backoff: a probe
        would be an extra connection there, which one-shot ingests (ffmpeg -listen 1) die of."""
        if self.target.scheme != "tcp" or self.probe_interval_s <= 0 or self.target.port is None:
            stopping.wait(delay)
            return None
        deadline = time.monotonic() + delay
        while not stopping.wait(min(self.probe_interval_s, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return None
            sock = probe_tcp(
                self.target.host,
                self.target.port,
                timeout_s=self.connect_timeout_s,
                stopped=stopping.is_set,
            )
            if sock is not None:
                self._counters["probe_hits"] += 1
                return sock
            self._counters["probes"] += 1
        return None

    def _pump(self, conn: Connection, generation: int, stopping: threading.Event) -> bool:
        """Send until stopped (False) or until the stream changed (True). Raises ``LinkDown``."""
        while not stopping.is_set():
            item = self._next(generation, stopping)
            if item is None:
                continue
            if item.generation != generation:
                with self._lock:  # put it back: the next connection starts with it
                    self._queue.appendleft(item)
                    self._keys_queued += item.key
                    self._audio_queued += item.audio
                return True
            conn.send(item)
            self._counters["audio_packets" if item.audio else "packets"] += 1
        return False
