"""capture -> selector -> encoders -> outputs, on one thread per pipeline.

The capture threads of the sources wake the pipeline thread as frames arrive; it inspects each frame
(black/frozen), reads each source's health (a device reported lost counts at once), lets the selector decide, encodes what the selector hands out with every rendition
that has an output attached, and gives the packets to the outputs (segment recorder, live push).
Timing comes from the frames' capture times end to end.

The thread never blocks on an output: the recorder's closing and fsyncs happen on its own thread and
the live push has a bounded queue of its own. ``heartbeat``/``last_output`` let the watchdog see a
stall; ``abandon()`` leaves a stuck thread behind (it is a daemon and checks its stop flag on waking).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from drivers.camera.source import FrameSource
from edge_media.config import MediaConfig
from edge_media.encoder import EncodedPacket, Encoder
from edge_media.selector import Selected, Selector, inspect_frame
from edge_media.slate import slate_frame
from kiosk_core.health import HealthStatus

log = logging.getLogger("kiosk.media.pipeline")
Emit = Callable[[str, dict[str, Any]], None]


class Output(Protocol):
    def write(self, ep: EncodedPacket, encoder: Encoder) -> None: ...


class PacketTap:
    """An output that only counts packets and capture->packet latency (benchmarks, tests)."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.packets = 0
        self.keyframes = 0

    def write(self, ep: EncodedPacket, encoder: Encoder) -> None:
        self.packets += 1
        self.keyframes += ep.keyframe
        self.latencies_ms.append((time.monotonic() - ep.t_capture) * 1000)


class Pipeline:
    def __init__(
        self,
        sources: dict[str, FrameSource],
        cfg: MediaConfig,
        *,
        emit: Emit | None = None,
        origin: float | None = None,
        name: str = "pipeline",
        audio: Any = None,
    ) -> None:
        self.sources = sources
        self.cfg = cfg
        self.emit = emit or (lambda _t, _d: None)
        self.name = name
        self.origin = time.monotonic() if origin is None else origin
        out_fps = max(r.fps for r in cfg.renditions.values())
        self.selector = Selector(
            {role: s.frame_interval for role, s in sources.items()},
            cfg.failover,
            out_interval=1 / out_fps,
            on_switch=self._on_switch,
            now=time.monotonic(),
        )
        self.encoders = {name: Encoder(name, r, origin=self.origin) for name, r in cfg.renditions.items()}
        self._outputs: dict[str, list[Output]] = {name: [] for name in cfg.renditions}
        # An AudioSource (edge_media/audio.py), encoded on this thread on the video's timeline (same
        # origin) and muxed by outputs that take audio (the recorder); the video never waits for it.
        self.audio = audio
        self.audio_encoder: Any = None
        self.audio_errors = 0
        if audio is not None:
            from edge_media.audio import AudioEncoder

            self.audio_encoder = AudioEncoder(cfg.audio, origin=self.origin)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stall_s = 0.0
        self.started_at = time.monotonic()
        self.heartbeat = self.started_at
        self.last_output = self.started_at
        self.frames_out = 0
        self.failed: str = ""
        self._out_times: list[float] = []
        # The call (edge_media/call/): the selected picture of every output frame goes to these taps
        # (after failover, so the call follows it), and each microphone block passes through the
        # audio processor (echo canceller, uplink, the clerk's voice mixed in) before it is encoded.
        self.frame_taps: list[Callable[[Any, float], None]] = []
        self.audio_processor: Callable[[Any], Any] | None = None

    # --- outputs ---------------------------------------------------------------------------------

    def attach(self, rendition: str, output: Output) -> None:
        with self._lock:
            self._outputs[rendition] = [*self._outputs[rendition], output]
        if self.audio_encoder is not None and hasattr(output, "add_audio"):
            output.add_audio(self.audio_encoder)
        self.encoders[rendition].request_keyframe()

    def detach(self, output: Output) -> None:
        with self._lock:
            for name, outs in self._outputs.items():
                self._outputs[name] = [o for o in outs if o is not output]

    def outputs(self, rendition: str) -> list[Output]:
        return list(self._outputs[rendition])

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for src in self.sources.values():
            src.add_listener(self._wake.set)
        if self.audio is not None:
            self.audio.add_listener(self._wake.set)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop the thread and flush the encoders; False if the thread did not stop (left behind)."""
        self._stop.set()
        self._wake.set()
        for src in self.sources.values():
            src.remove_listener(self._wake.set)
        if self.audio is not None:
            self.audio.remove_listener(self._wake.set)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():  # its encoder is in use by the stuck thread: do not flush it
                log.error("%s: thread stuck; abandoned", self.name)
                return False
        for name, enc in self.encoders.items():
            for ep in enc.close():
                self._deliver(name, enc, ep)
        if self.audio_encoder is not None:
            self._deliver_audio(self.audio_encoder.close())
        return True

    def inject_stall(self, seconds: float) -> None:
        """Make the pipeline thread hang (as a wedged codec would), for the watchdog's tests."""
        self._stall_s = seconds
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds since a frame last went through (0 during the start-up grace)."""
        now = time.monotonic() if now is None else now
        if self.failed:
            return now - self.started_at + 1e3
        return now - max(self.last_output, self.started_at + 1.0)

    # --- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = self.selector.next_deadline(now) - now
                if timeout > 0:
                    self._wake.wait(timeout)
                self._wake.clear()
                if self._stall_s:
                    stall, self._stall_s = self._stall_s, 0.0
                    self._stop.wait(stall)
                if self._stop.is_set():
                    return
                for role, src in self.sources.items():
                    for cf in src.drain():
                        self.selector.offer(
                            role, cf.frame, cf.t_capture, cf.t_arrival, sample=inspect_frame(cf.frame)
                        )
                    # after the drain: a device the capture layer reports lost (gone, EIO) is
                    # unhealthy now, without waiting out the silence window
                    health = src.health()
                    self.selector.report_health(
                        role, health.status is HealthStatus.OK, health.reason, time.monotonic()
                    )
                for sel in self.selector.poll(time.monotonic()):
                    self._encode(sel)
                if self.audio is not None:
                    self._encode_audio()
                self.heartbeat = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported; the watchdog restarts the pipeline
            self.failed = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed", self.name)

    def _encode(self, sel: Selected) -> None:
        for tap in self.frame_taps:
            try:
                tap(sel.frame if sel.frame is not None else slate_frame(*self._tap_size()), sel.t_capture)
            except Exception:  # noqa: BLE001 - the call must not stop the recording
                log.exception("%s: frame tap failed", self.name)
        for name, enc in self.encoders.items():
            outs = self._outputs[name]
            if not outs:
                continue
            frame = sel.frame if sel.frame is not None else slate_frame(enc.width, enc.height)
            for ep in enc.encode(frame, sel.t_capture):
                self._deliver(name, enc, ep)
        now = time.monotonic()
        self.frames_out += 1
        self.last_output = now
        self._out_times.append(now)
        if len(self._out_times) > 64:
            del self._out_times[:32]

    def _tap_size(self) -> tuple[int, int]:
        enc = next(iter(self.encoders.values()))
        return enc.width, enc.height

    def _deliver(self, name: str, enc: Encoder, ep: EncodedPacket) -> None:
        for out in self._outputs[name]:
            try:
                out.write(ep, enc)
            except Exception:  # noqa: BLE001 - one broken output must not starve the others
                log.exception("%s: output %r failed", self.name, out)

    def _encode_audio(self) -> None:
        for block in self.audio.drain():
            processor = self.audio_processor
            if processor is not None:
                try:
                    block = processor(block)
                except Exception:  # noqa: BLE001 - the recording keeps the raw microphone then
                    log.exception("%s: audio processor failed", self.name)
            try:
                packets = self.audio_encoder.encode(block)
            except Exception as exc:  # noqa: BLE001 - a bad audio block must not stop the video
                self.audio_errors += 1
                log.warning("%s: audio: %s", self.name, exc)
                continue
            self._deliver_audio(packets)

    def _deliver_audio(self, packets: list[Any]) -> None:
        outs = {id(o): o for outs in self._outputs.values() for o in outs if hasattr(o, "write_audio")}
        for ea in packets:
            for out in outs.values():
                try:
                    out.write_audio(ea, self.audio_encoder)
                except Exception:  # noqa: BLE001
                    log.exception("%s: output %r failed on audio", self.name, out)

    def _on_switch(self, event: dict[str, Any]) -> None:
        log.info(
            "failover %s -> %s (%s): gap %s ms", event["from"], event["to"], event["reason"], event["gap_ms"]
        )
        self.emit("media.failover", event)

    # --- telemetry -------------------------------------------------------------------------------

    def fps_out(self) -> float:
        times = [t for t in self._out_times if t > time.monotonic() - 2.0]
        if len(times) < 2:
            return 0.0
        return round((len(times) - 1) / (times[-1] - times[0]), 2)

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "selector": self.selector.state(now),
            "fps_out": self.fps_out(),
            "frames_out": self.frames_out,
            "renditions": {
                name: {**enc.stats(), "outputs": len(self._outputs[name])}
                for name, enc in self.encoders.items()
            },
            "stalled_s": round(max(0.0, now - self.last_output), 3),
            "failed": self.failed,
            **(
                {"audio": {**self.audio_encoder.stats(), "errors": self.audio_errors}}
                if self.audio_encoder is not None
                else {}
            ),
        }
