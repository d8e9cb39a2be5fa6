"""One video call with the clerk: publish the kiosk's tracks to the county's SFU, show and play the
clerk, survive a poor village link.

``CallSession`` is created by the media process when the appliance forwards ``session.call.accepted``
with a ``media`` object (``CallTarget``). It:

- publishes three tracks (room camera as the pipeline selects it, document camera, microphone after
  the echo canceller) on one peer connection, and subscribes to the clerk's feed on a second one
  (Janus VideoRoom's publisher/subscriber model);
- decodes the clerk's video to a display adapter (and a small preview for the UI), and the clerk's
  voice to the speaker adapter, the echo canceller's far end and the recording's mix;
- adapts: aiortc's encoders follow the server's REMB; on top, a loss- and delay-based estimate from the
  server's receiver reports lowers the encoders' target, the video tracks drop resolution before frame
  rate, and below ``min_video_kbps`` video pauses and the call is ``audio_only``;
- recovers: a dead link (ICE failed, the server silent for ``media_timeout_s``) tears the call down and
  rejoins with backoff capped at ``reconnect_cap_s``, so a link that comes back is used within about a
  second; after ``text_fallback_s`` without media the state says ``failed`` (the call goes on as text)
  while it keeps trying.

The state (``state()``) is the ``call`` object of the media process's retained state; changes are
events for the appliance (``call.*``, docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from drivers.camera.config import parse_size
from edge_media.call import encoders
from edge_media.call.display import CommandDisplay, PreviewDisplay, open_speaker
from edge_media.call.errors import CallClosed, CallError, CallSessionLost
from edge_media.call.tracks import (
    AUDIO_RATE,
    CallAudioTrack,
    CallVideoTrack,
    FrameSlot,
    mono_resampler,
    to_mono_s16,
)
from kiosk_core.backoff import equal_jitter
from kiosk_core.tasks import TaskSet, wait_for

if TYPE_CHECKING:
    from edge_media.audio import CapturedAudio
    from edge_media.config import CallConfig, CallTarget

log = logging.getLogger("kiosk.media.call")

# aiortc's encoders, with the bitrate changed only when it is worth a keyframe (edge_media/call/encoders.py).
encoders.install()

CONNECT_TIMEOUT_S = 8.0  # one attempt: session, join, ICE + DTLS (a few RTTs at 300 ms)
PING_S = 1.0
PROBE_TIMEOUT_S = 1.5  # a probe while the server is out of reach (5 RTTs of a 300 ms village link)
PROBE_EVERY_S = 0.25  # probes overlap, so the first SYN after the link returns is at most this late
AUDIO_KBPS = 40
START_KBPS = 600.0
MAX_KBPS = 1500.0
Emit = Callable[[str, dict[str, Any]], None]


class SignallingClient(Protocol):
    """The transport seam: Janus VideoRoom today (``edge_media/call/janus.py``); a WHIP/WHEP client
    (SRS, MediaMTX, LiveKit) would offer the same five steps."""

    publisher_id: Any

    async def connect(self) -> None: ...
    async def publish(self, offer_sdp: str) -> str: ...
    async def wait_publisher(self, match: Callable[[Any], bool], timeout_s: float) -> Any: ...
    async def subscribe(self, feeds: list[Any]) -> str: ...
    async def start(self, answer_sdp: str) -> None: ...
    async def next_event(self, timeout_s: float | None = None) -> Any: ...
    async def list_participants(self) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


def janus_client(target: CallTarget) -> SignallingClient:
    from edge_media.call.janus import JanusVideoRoom

    # Short timeouts: a rejoin on a returning link must not wait out a request sent into the void.
    return JanusVideoRoom(
        target.url,
        target.room,
        target.display,
        token=target.token,
        pin=target.pin,
        connect_timeout_s=2.0,
        request_timeout_s=3.0,
    )


class PcmFifo:
    """The clerk's voice on its way into the recording's mix: bounded (``max_ms``), oldest dropped."""

    def __init__(self, max_ms: int = 500) -> None:
        self._lock = threading.Lock()
        self._buf = np.zeros(0, np.int16)
        self._max = max_ms * AUDIO_RATE // 1000

    def push(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._buf = np.concatenate([self._buf, pcm])[-self._max :]

    def pull(self, n: int) -> np.ndarray:
        with self._lock:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out if len(out) == n else np.concatenate([out, np.zeros(n - len(out), np.int16)])


class RateController:
    """Loss- and delay-based target for the video encoders from the server's receiver reports
    (the loss half of Google Congestion Control), capped by the server's REMB."""

    def __init__(self, start_kbps: float = START_KBPS, min_kbps: float = 30.0, max_kbps: float = MAX_KBPS):
        self.kbps = start_kbps
        self.min_kbps, self.max_kbps = min_kbps, max_kbps
        self.base_rtt: float | None = None

    def update(self, fraction_lost: float | None, rtt_s: float | None, remb_kbps: float | None) -> float:
        if fraction_lost is not None:
            if fraction_lost > 0.10:
                self.kbps *= 1 - 0.5 * fraction_lost
            elif fraction_lost < 0.02:
                self.kbps *= 1.08
        if rtt_s is not None:
            self.base_rtt = rtt_s if self.base_rtt is None else min(self.base_rtt, rtt_s)
            # A standing queue at the bottleneck (the RTT 400 ms over its floor): back off gently. Random
            # loss below 10 % (a village radio link's 3 %) holds the rate; NACK and FEC repair it.
            if rtt_s > self.base_rtt + 0.4:
                self.kbps *= 0.9
        self.kbps = max(self.min_kbps, min(self.kbps, self.max_kbps))
        # The server's REMB is final, floor or not: below the video minimum the call goes on as audio.
        return min(self.kbps, remb_kbps) if remb_kbps else self.kbps


class CallSession:
    def __init__(
        self,
        session_id: str,
        target: CallTarget,
        cfg: CallConfig,
        *,
        doccam: Any = None,
        has_mic: bool = False,
        emit: Emit | None = None,
        on_change: Callable[[], None] | None = None,
        on_preview: Callable[[int, int, bytes], None] | None = None,
        client_factory: Callable[[CallTarget], SignallingClient] = janus_client,
    ) -> None:
        self.session_id = session_id
        self.target = target
        self.cfg = cfg
        self.doccam = doccam
        self.has_mic = has_mic
        self.emit = emit or (lambda _t, _d: None)
        self.on_change = on_change or (lambda: None)
        self.client_factory = client_factory
        self.display = (
            CommandDisplay(cfg.display_command, cfg.fps, on_preview)
            if cfg.display == "command"
            else PreviewDisplay(on_preview)
        )
        self.speaker = open_speaker(cfg.speaker)
        self.echo: Any = None
        if cfg.echo_cancel and has_mic:
            from edge_media.call.echo import EchoCanceller

            self.echo = EchoCanceller(sample_rate=AUDIO_RATE, tail_ms=cfg.echo_tail_ms)
            self.speaker.listeners.append(self.echo.far_end)
        self.mix = PcmFifo()
        self.speaker.listeners.append(self.mix.push)
        self.status = "connecting"
        self.reason: str | None = None
        self.clerk_video = False
        self.started_at = time.monotonic()
        self.connected_at: float | None = None
        self.reconnects = 0
        self.rx = {"video_frames": 0, "audio_ms": 0, "width": 0, "height": 0}
        self.tx: dict[str, Any] = {"tracks": [], "bitrate_kbps": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room_slot: FrameSlot | None = None
        self._doccam_slot: FrameSlot | None = None
        self._mic: CallAudioTrack | None = None
        self._video: dict[str, CallVideoTrack] = {}
        self._client: SignallingClient | None = None
        self._pub: RTCPeerConnection | None = None
        self._sub: RTCPeerConnection | None = None
        self._rx_video_at = 0.0
        self._rx_audio_at = 0.0
        self._rx_any_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._tasks = TaskSet("call", log)
        self._attempt_tasks = TaskSet("call-attempt", log)
        self._stopping = False
        self._mic_resampler: Any = None
        # The controller alone never pauses the video: only the server's REMB below the minimum does.
        self._rate = RateController(min_kbps=float(cfg.min_video_kbps) * 1.4)
        self.encoder_rebuilds = 0  # bitrate changes that cost a new encoder (a keyframe)
        self._bytes_sent: tuple[float, int] | None = None
        self._remb: float | None = None
        self._stale_sessions: list[int] = []  # Janus sessions of earlier attempts, maybe still alive
        self._feed_id: int | None = None  # the clerk's feed we are subscribed to
        self._clerk_gone: asyncio.Event | None = None
        self._dead: str | None = None  # why the server says this attempt is over

    # --- feeds from the pipeline (other threads) ----------------------------------------------------

    def room_tap(self, frame: Any, t_capture: float) -> None:
        """A ``Pipeline.frame_taps`` entry: the selected room picture (after failover)."""
        slot = self._room_slot
        if slot is not None:
            slot.put(frame, t_capture)

    def process_audio(self, block: CapturedAudio) -> CapturedAudio:
        """``Pipeline.audio_processor``: the microphone block, echo-cancelled, sent to the clerk, and
        returned with the clerk's voice mixed in for the recording."""
        import av

        from edge_media.audio import CapturedAudio

        if self._mic_resampler is None:
            self._mic_resampler = mono_resampler()
        pcm = to_mono_s16(block.frame, self._mic_resampler)
        if self.echo is not None and len(pcm):
            pcm = self.echo.process(pcm)
        mic = self._mic
        if mic is not None and len(pcm):
            mic.push(pcm)
        mixed = pcm.astype(np.int32) + self.mix.pull(len(pcm))
        out = np.clip(mixed, -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(out.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        return CapturedAudio(frame, block.t_capture)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._room_slot = FrameSlot(self._loop)
        self._doccam_slot = FrameSlot(self._loop)
        self._task = asyncio.create_task(self._run(), name=f"call {self.session_id}")
        if self.doccam is not None:
            self._tasks.spawn(self._feed_doccam())

    async def stop(self, reason: str = "ended") -> dict[str, Any]:
        """End the call (idempotent); the reply and the ``call.ended`` event carry its totals."""
        if self._stopping:
            return self.summary()
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._teardown()
        await self._tasks.close()
        self.display.close()
        self.speaker.close()
        self._set("off", None)
        summary = self.summary()
        self.emit("call.ended", {"session_id": self.session_id, "reason": reason, **summary})
        return summary

    def summary(self) -> dict[str, Any]:
        return {
            "duration_s": round(time.monotonic() - self.started_at, 1),
            "reconnects": self.reconnects,
            "rx": dict(self.rx),
            "tx": dict(self.tx),
        }

    def state(self) -> dict[str, Any]:
        """The ``call`` object of ``kiosk/local/state/media`` (docs/session.md)."""
        out: dict[str, Any] = {
            "state": self.status,
            "reason": self.reason,
            "session_id": self.session_id,
            "clerk_video": self.clerk_video,
            "mic": self._mic is not None or self.has_mic,
            "speaker": not self.speaker.error,
            "reconnects": self.reconnects,
            "rx": dict(self.rx),
            "tx": dict(self.tx),
            "display": self.display.stats(),
            "speaker_stats": self.speaker.stats(),
        }
        if self.echo is not None:
            out["echo"] = self.echo.stats()
        return out

    def _set(self, status: str, reason: str | None) -> None:
        if (status, reason) == (self.status, self.reason):
            return
        before = self.status
        self.status, self.reason = status, reason
        log.info("call %s: %s -> %s%s", self.session_id, before, status, f" ({reason})" if reason else "")
        data = {"session_id": self.session_id, "reason": self._scrub(reason)}
        if status == "connected" and before in ("reconnecting", "failed", "audio_only"):
            if before != "audio_only":
                self.emit("call.reconnected", {**data, "reconnects": self.reconnects})
        elif status == "connected" and before == "connecting":
            self.emit(
                "call.connected", {**data, "setup_ms": round((time.monotonic() - self.started_at) * 1000)}
            )
        elif status in ("reconnecting", "audio_only", "failed"):
            self.emit(f"call.{status}", data)
        self.on_change()

    def _scrub(self, reason: str | None) -> str | None:
        """A reason for the fleet: the media server's address is the platform's own business and says
        nothing about the kiosk, so it goes out as ``<media server>``."""
        if reason is None:
            return None
        from urllib.parse import urlsplit

        host = urlsplit(self.target.url).hostname or ""
        out = reason.replace(self.target.url, "<media server>")
        return out.replace(host, "<media server>") if host else out

    # --- the call ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        down_since: float | None = None
        ever = False
        held = False  # the connections of the last attempt came back: go on with them
        while not self._stopping:
            try:
                if held:
                    held = False
                else:
                    await self._connect_once()
                ever = True
                failures, down_since = 0, None
                self.connected_at = time.monotonic()
                self._set("connected", None)
                await self._watch()
                reason = "the call ended on the server"
            except asyncio.CancelledError:
                raise
            except LinkSilent as exc:
                # Hold what we have: a link that drops for seconds and returns carries the same
                # connections on (ICE consent and the Janus session outlive it), which is a round trip
                # where a rejoin is seven.
                reason = _describe(exc)
                down_since = time.monotonic() - self.cfg.media_timeout_s
                self._set("reconnecting", reason)
                self.reconnects += 1
                if await self._resume(down_since, reason):
                    held = True
                    continue
                failures = 1  # counted once above; the rejoin below is the same outage
            except (CallError, MediaStreamError, OSError, TimeoutError, ValueError) as exc:
                reason = _describe(exc)
            except Exception as exc:  # noqa: BLE001 - aiortc raises many kinds; a call never crashes the process
                log.exception("call %s: unexpected error", self.session_id)
                reason = _describe(exc)
            await self._teardown()
            if self._stopping:
                return
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= self.cfg.text_fallback_s:
                self._set("failed", reason)
            elif ever:
                self._set("reconnecting", reason)
            else:
                self.reason = reason
                self.on_change()
            if ever and failures == 0:
                self.reconnects += 1
            cap = self.cfg.reconnect_cap_s if self.status != "failed" else max(self.cfg.reconnect_cap_s, 5.0)
            await asyncio.sleep(equal_jitter(failures, self.cfg.reconnect_base_s, cap))
            failures += 1
            # Wait until the server answers at all before a full attempt, so no attempt is stuck in a
            # dead TCP handshake or an unanswered request when the link comes back.
            await self._wait_reachable(
                time.monotonic() + (cap if self.status == "failed" else 30.0), down_since, reason
            )

    async def _resume(self, down_since: float, reason: str) -> bool:
        """Keep the attempt's connections through an outage and tell whether they carry on.

        Pings go out every ``PROBE_EVERY_S``, overlapping, each with its own short timeout, so the first
        one sent after the link returns answers one round trip later. An answer means the server's path
        and our Janus session are back; the peer connections never stopped (aiortc's ICE consent gives
        up only after about 30 s), so a keyframe is all the clerk needs. False (a rejoin follows): the
        server says the session is gone, a connection failed, or ``hold_s`` passed.
        """
        client, pub = self._client, self._pub
        if client is None or pub is None:
            return False
        deadline = down_since + self.cfg.hold_s
        back = asyncio.Event()
        lost: list[str] = []

        async def ping() -> None:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await client.list_participants()
            except (CallSessionLost, CallClosed) as exc:
                lost.append(_describe(exc))
            except (CallError, OSError, TimeoutError) as exc:
                log.debug("call resume ping: %s", exc)
                return
            back.set()

        def hopeless() -> bool:
            return pub.connectionState in ("failed", "closed") or bool(self._dead or lost)

        await self._overlapping(ping, back, deadline, down_since, reason, give_up=hopeless)
        if not back.is_set() or hopeless():
            log.info("call %s: cannot resume (%s)", self.session_id, self._dead or lost or "no answer")
            return False
        self._rx_any_at = time.monotonic()
        self._request_keyframes(pub)
        down = time.monotonic() - down_since
        log.info("call %s: the link is back after %.1f s, same connections", self.session_id, down)
        return True

    def _request_keyframes(self, pc: RTCPeerConnection) -> None:
        """A keyframe on every video track at once, as a PLI would ask (the clerk's decoder lost the
        thread during the outage; waiting for the browser's own PLI costs a round trip)."""
        for sender in pc.getSenders():
            if sender.track is not None and sender.track.kind == "video":
                with contextlib.suppress(AttributeError):
                    sender._RTCRtpSender__force_keyframe = True  # noqa: SLF001 - aiortc's PLI flag

    async def _wait_reachable(self, until: float, down_since: float, reason: str) -> None:
        """Probe the server with short HTTP requests, a new one every ``PROBE_EVERY_S`` while earlier
        ones are still waiting (any HTTP answer, even an error status, means the path is back), until
        one answers or ``until`` passes. Meanwhile the call turns ``failed`` (text) on time."""
        import aiohttp

        url = self.target.url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        answered = asyncio.Event()

        async def probe() -> None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(timeout=timeout, connector=connector) as http,
                    http.get(url, allow_redirects=False) as resp,
                ):
                    await resp.read()
                answered.set()

        await self._overlapping(probe, answered, until, down_since, reason)

    async def _overlapping(
        self,
        attempt: Callable[[], Any],
        done: asyncio.Event,
        until: float,
        down_since: float,
        reason: str,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        """Start ``attempt()`` every ``PROBE_EVERY_S`` while earlier ones still wait (so the first one
        sent after the link returns is at most that late), until one sets ``done``, ``give_up()`` says
        so, or ``until`` passes. Meanwhile the call turns ``failed`` (text) on time."""
        attempts = TaskSet("call-probe", log)
        try:
            while not self._stopping and time.monotonic() < until and not done.is_set() and not give_up():
                if time.monotonic() - down_since >= self.cfg.text_fallback_s and self.status != "failed":
                    self._set("failed", reason)
                attempts.spawn(attempt())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PROBE_EVERY_S):
                        await done.wait()
        finally:
            await attempts.close()

    def _rtc_config(self) -> RTCConfiguration:
        # An explicit list, even empty: aiortc's default (None) would use a public STUN server.
        servers = [
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in self.target.ice_servers
        ]
        # max-bundle: one ICE/DTLS transport for every track. With aiortc's default ("balanced", a
        # transport per media kind) a second video track stayed on a transport that BUNDLE dropped and
        # never sent a packet (seen with Janus: mic + room + doccam, the doccam silent).
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    async def _connect_once(self) -> None:
        assert self._loop is not None and self._room_slot is not None and self._doccam_slot is not None
        client = self.client_factory(self.target)
        self._client = client
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await client.connect()
            pc = RTCPeerConnection(self._rtc_config())
            self._pub = pc
            w, h = parse_size(self.cfg.size)
            tracks: list[tuple[str, Any]] = []
            if self.has_mic:
                self._mic = CallAudioTrack(self._loop)
                tracks.append(("mic", self._mic))
            room = CallVideoTrack(
                "room", self._room_slot, size=(w, h), fps=self.cfg.fps, min_kbps=self.cfg.min_video_kbps
            )
            tracks.append(("room", room))
            self._video = {"room": room}
            if self.doccam is not None:
                dw, dh = parse_size(self.cfg.doccam_size)
                doc = CallVideoTrack(
                    "doccam",
                    self._doccam_slot,
                    size=(dw, dh),
                    fps=self.cfg.doccam_fps,
                    min_kbps=self.cfg.min_video_kbps // 2,
                )
                tracks.append(("doccam", doc))
                self._video["doccam"] = doc
            for _name, track in tracks:
                pc.addTransceiver(track, direction="sendonly")
            self.tx["tracks"] = [name for name, _ in tracks]
            await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
            answer = await client.publish(pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            while pc.connectionState != "connected":
                if pc.connectionState in ("failed", "closed"):
                    raise CallError(f"the connection to the media server {pc.connectionState}")
                await asyncio.sleep(0.05)
        self._rx_any_at = time.monotonic()
        self._attempt_tasks.spawn(self._signalling_events(client))
        self._attempt_tasks.spawn(self._follow_clerk(client))
        stale, self._stale_sessions = self._stale_sessions, []
        destroy = getattr(client, "destroy_session", None)
        for old in stale if destroy is not None else ():
            self._attempt_tasks.spawn(destroy(old))

    async def _follow_clerk(self, client: SignallingClient) -> None:
        """Subscribe to the first other publisher in the room (the clerk), again when it comes back."""
        try:
            await self._subscribe_clerk(client)
        except (CallError, OSError, ValueError) as exc:  # the attempt is over: _watch sees _dead
            self._dead = self._dead or _describe(exc)

    async def _subscribe_clerk(self, client: SignallingClient) -> None:
        while True:
            me, mine = client.publisher_id, self.target.display
            # Not ourselves, and not our own earlier publisher that a dropped link left in the room.
            feed = await client.wait_publisher(
                lambda p, me=me, mine=mine: p.id != me and p.display != mine, timeout_s=3600.0
            )
            self._feed_id = feed.id
            sub = RTCPeerConnection(self._rtc_config())
            self._sub = sub
            gone = self._clerk_gone = asyncio.Event()

            @sub.on("track")
            def on_track(track: Any, gone: asyncio.Event = gone) -> None:
                consume = self._consume_video if track.kind == "video" else self._consume_audio
                self._attempt_tasks.spawn(consume(track, gone))

            offer = await client.subscribe([feed])
            await sub.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await sub.setLocalDescription(await sub.createAnswer())
            await client.start(sub.localDescription.sdp)
            await gone.wait()  # the clerk's tracks ended (they left): wait for them again
            with contextlib.suppress(Exception):
                await sub.close()
            self._sub = None
            self.clerk_video = False

    async def _consume_video(self, track: Any, gone: asyncio.Event) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                self._rx_video_at = self._rx_any_at = now
                self.rx["video_frames"] += 1
                self.rx["width"], self.rx["height"] = frame.width, frame.height
                if not self.clerk_video:
                    self.clerk_video = True
                    self.on_change()
                self.display.show(frame)
        except MediaStreamError:
            gone.set()

    async def _consume_audio(self, track: Any, gone: asyncio.Event) -> None:
        resampler = mono_resampler()
        try:
            while True:
                frame = await track.recv()
                self._rx_audio_at = self._rx_any_at = time.monotonic()
                pcm = to_mono_s16(frame, resampler)
                self.rx["audio_ms"] += round(len(pcm) * 1000 / AUDIO_RATE)
                self.speaker.play(pcm)
        except MediaStreamError:
            gone.set()

    async def _signalling_events(self, client: SignallingClient) -> None:
        """The server's events: the clerk leaving ends the subscription; a lost session ends the try."""
        from edge_media.call import janus

        while True:
            event = await client.next_event()
            if isinstance(event, janus.PublisherLeft) and event.feed_id == self._feed_id:
                self._feed_id = None
                if self._clerk_gone is not None:
                    self._clerk_gone.set()
            elif isinstance(event, janus.SessionLost | janus.ServerGone):
                self._dead = event.reason
            elif isinstance(event, janus.HangUp) and event.handle == "publisher":
                self._dead = f"the media server hung up: {event.reason}"

    async def _ping(self, client: SignallingClient) -> None:
        """One round trip to the server (a VideoRoom request): is the signalling path alive?"""
        async with asyncio.timeout(PING_S):
            await client.list_participants()

    async def _watch(self) -> None:
        """Return or raise when the call is judged dead; adapt the uplink meanwhile."""
        client, pc = self._client, self._pub
        assert client is not None and pc is not None
        ping_failed_since: float | None = None
        next_ping = 0.0
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if pc.connectionState in ("failed", "closed"):
                raise CallError(f"the connection to the media server {pc.connectionState}")
            if self._dead:
                raise CallError(self._dead)
            if now >= next_ping:
                next_ping = now + PING_S
                try:
                    await self._ping(client)
                    ping_failed_since = None
                except (CallError, OSError, TimeoutError) as exc:
                    ping_failed_since = ping_failed_since or now
                    log.debug("call ping failed: %s", exc)
            media_silent = now - self._rx_any_at > self.cfg.media_timeout_s
            if ping_failed_since is not None and now - ping_failed_since >= self.cfg.media_timeout_s:
                if media_silent:
                    raise LinkSilent(f"the media server did not answer for {self.cfg.media_timeout_s:g} s")
            await self._adapt(pc, now)

    async def _adapt(self, pc: RTCPeerConnection, now: float) -> None:
        if self._bytes_sent is not None and now - self._bytes_sent[0] < 1.0:
            return
        lost, rtt, sent = None, None, 0
        for sender in pc.getSenders():
            if sender.track is None:
                continue
            try:
                report = await sender.getStats()
            except Exception:  # noqa: BLE001 - stats are advisory
                continue
            for stat in report.values():
                if stat.type == "outbound-rtp":
                    sent += stat.bytesSent
                elif stat.type == "remote-inbound-rtp" and sender.track.kind == "video":
                    lost = max(lost or 0.0, stat.fractionLost or 0.0)
                    rtt = max(rtt or 0.0, stat.roundTripTime or 0.0)
        if self._bytes_sent is not None:
            t0, b0 = self._bytes_sent
            self.tx["bitrate_kbps"] = round((sent - b0) * 8 / 1000 / max(1e-3, now - t0))
        self._bytes_sent = (now, sent)
        if lost is not None and lost > 1.0:  # aiortc reports the RTCP byte (x/256), not a fraction
            lost /= 256.0
        remb = self._remb_kbps(pc)
        budget = self._rate.update(lost, rtt, remb)
        log.debug("call uplink: lost %s rtt %s remb %s -> %.0f kbit/s", lost, rtt, remb, budget)
        shares = {"room": 0.75, "doccam": 0.25} if "doccam" in self._video else {"room": 1.0}
        for name, track in self._video.items():
            kbps = budget * shares[name]
            track.set_target_kbps(kbps)
            self._set_encoder(pc, track, kbps)
        room = self._video.get("room")
        if room is not None and room.paused and self.status == "connected":
            self._set("audio_only", f"uplink estimate {budget:.0f} kbit/s is below the video minimum")
        elif room is not None and not room.paused and self.status == "audio_only":
            self._set("connected", None)
        # A clerk without a camera (voice only) needs nothing said; a picture that stops while the
        # voice goes on is shown as paused.
        if self.clerk_video and now - self._rx_video_at > 3.0 and now - self._rx_audio_at < 1.0:
            self.clerk_video = False  # the clerk's picture stopped while their voice goes on
            self.on_change()

    def _remb_kbps(self, pc: RTCPeerConnection) -> float | None:
        """The server's REMB: the sum of the last one each video encoder received (``encoders.py``)."""
        values = [
            enc.remb_bps / 1000
            for enc in self._encoders(pc).values()
            if getattr(enc, "remb_bps", None) is not None
        ]
        if values:
            self._remb = sum(values)  # kept: the server repeats its REMB only now and then
        return self._remb

    @staticmethod
    def _encoders(pc: RTCPeerConnection) -> dict[Any, Any]:
        """Each video sender's encoder by track (aiortc builds it with the first frame; no public getter)."""
        out = {}
        for sender in pc.getSenders():
            enc = getattr(sender, "_RTCRtpSender__encoder", None)
            if sender.track is not None and sender.track.kind == "video" and enc is not None:
                out[sender.track] = enc
        return out

    def _set_encoder(self, pc: RTCPeerConnection, track: CallVideoTrack, kbps: float) -> None:
        enc = self._encoders(pc).get(track)
        if enc is not None and hasattr(enc, "set_rate") and enc.set_rate(kbps * 1000):
            self.encoder_rebuilds += 1  # a keyframe: the benchmark and the tests count them

    async def _teardown(self) -> None:
        await self._attempt_tasks.close()
        self._dead, self._feed_id, self._clerk_gone = None, None, None
        self._mic = None
        for track in self._video.values():
            track.stop()
        self._video = {}
        self._bytes_sent = None
        self._remb = None
        for pc in (self._sub, self._pub):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await wait_for(pc.close(), 2.0)
        self._sub = self._pub = None
        client, self._client = self._client, None
        if client is not None and getattr(client, "session_id", None) is not None:
            # If the link is down its close() below cannot tell the server: the next session destroys it.
            self._stale_sessions.append(client.session_id)
            del self._stale_sessions[:-4]
        if client is not None:
            with contextlib.suppress(Exception):
                await wait_for(client.close(), 2.0)
        if self.clerk_video:
            self.clerk_video = False

    async def _feed_doccam(self) -> None:
        """The document camera's live preview, polled at the call's doccam rate."""
        last = None
        while True:
            await asyncio.sleep(1 / self.cfg.doccam_fps)
            src = getattr(self.doccam, "preview", None)
            cf = src.latest() if src is not None else None
            if cf is not None and cf is not last and self._doccam_slot is not None:
                last = cf
                self._doccam_slot.put(cf.frame, cf.t_capture)


class LinkSilent(CallError):
    """Neither the server's answers nor the media arrived for ``media_timeout_s``: hold, maybe resume."""


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, CallError) else f"{type(exc).__name__}: {text}"
