"""One encoder per rendition: frames with capture times in, compressed packets out.

Timestamps come from capture times: ``pts = (t_capture - origin)`` in 1/90000 s, kept strictly
increasing. Frames of another size or pixel format (a backup camera with another mode, the slate) are
scaled to the rendition. ``apply_step()`` (called by the live push when the uplink is congested)
changes bitrate and/or size: the codec is reopened at the next frame, which starts with a keyframe,
and ``generation`` increments so outputs open a new stream (a segment cut, a push restart).
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from drivers.camera.config import parse_size
from edge_media.config import ENCODERS, MediaConfig, RenditionConfig
from kiosk_core.errors import MediaError

if TYPE_CHECKING:
    import av

TIME_BASE = Fraction(1, 90000)
# Unique across encoders: an output seeing a new generation knows the stream parameters changed.
_GENERATIONS = itertools.count(1)


class EncoderError(MediaError):
    code = "media.encoder"


class EncoderUnavailable(EncoderError):
    """The configured encoder cannot be opened on this machine (and no ``encoder_fallback`` could)."""

    code = "media.encoder.unavailable"


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    """What a rendition encodes with after ``resolve_renditions``: ``using`` differs from ``wanted``
    only when ``wanted`` could not be opened (``error`` says why) and ``encoder_fallback`` could."""

    rendition: str
    wanted: str
    using: str
    error: str = ""

    @property
    def fell_back(self) -> bool:
        return self.using != self.wanted


def _why_unavailable(encoder: str, error: str) -> str:
    if "v4l2m2m" not in encoder:
        return error
    from drivers.camera.hw_encoder import read_board

    board = read_board()
    if board.h264_m2m:
        return f"{error} (the V4L2 encoder device exists but refused these settings)"
    return (
        f"{error}: this machine ({board.model or 'no device-tree model'}) has no V4L2 memory-to-memory "
        "encoder device (a Pi 4's bcm2835-codec-encode, /dev/video11)"
    )


def resolve_renditions(
    media: MediaConfig, names: Iterable[str] | None = None
) -> tuple[MediaConfig, list[EncoderChoice]]:
    """Open each rendition's encoder once, as the pipeline will (same size, rate and options); one that
    fails is replaced by its ``encoder_fallback`` when that opens. Returns the config to build the
    pipeline with and a choice per rendition. Raises ``EncoderUnavailable`` naming the rendition,
    the encoder and why, with the way out. Blocking (tens of ms per encoder)."""
    renditions = dict(media.renditions)
    choices = []
    for name in names if names is not None else list(renditions):
        cfg = renditions[name]
        wanted = cfg.encoder_name
        try:
            _probe(name, cfg)
            choices.append(EncoderChoice(name, wanted, wanted))
            continue
        except EncoderError as exc:
            error = _why_unavailable(wanted, str(exc).split(": ", 2)[-1])
        if not cfg.encoder_fallback:
            raise EncoderUnavailable(
                f"rendition {name}: encoder {wanted} is unavailable: {error}; set "
                f'[media.renditions.{name}] encoder = "auto" or a software encoder, or '
                f'encoder_fallback = "{ENCODERS[cfg.codec][0]}"'
            )
        fallback = cfg.model_copy(update={"encoder": cfg.encoder_fallback})
        try:
            _probe(name, fallback)
        except EncoderError as exc:
            raise EncoderUnavailable(
                f"rendition {name}: encoder {wanted} is unavailable ({error}) and so is its "
                f"fallback {cfg.encoder_fallback}: {exc}"
            ) from None
        renditions[name] = fallback
        choices.append(EncoderChoice(name, wanted, cfg.encoder_fallback, error))
    return media.model_copy(update={"renditions": renditions}), choices


def _probe(name: str, cfg: RenditionConfig) -> None:
    enc = Encoder(name, cfg, origin=0.0)
    enc._open()
    enc.close()


@dataclass(slots=True)
class EncodedPacket:
    packet: av.Packet  # pts/dts in TIME_BASE
    t_capture: float  # of the frame this packet encodes (monotonic)
    keyframe: bool
    generation: int
    rendition: str

    def copy(self) -> EncodedPacket:
        """An independent packet (its own buffer and timestamps) for another output thread."""
        import av

        p = av.Packet(bytes(self.packet))
        p.pts, p.dts, p.time_base = self.packet.pts, self.packet.dts, self.packet.time_base
        p.is_keyframe = self.keyframe
        return EncodedPacket(p, self.t_capture, self.keyframe, self.generation, self.rendition)


class Encoder:
    def __init__(self, name: str, cfg: RenditionConfig, *, origin: float) -> None:
        self.name = name
        self.cfg = cfg
        self.origin = origin
        self.width, self.height = parse_size(cfg.size)
        self.bitrate_kbps = cfg.bitrate_kbps
        self.generation = next(_GENERATIONS)
        self._ctx: Any = None
        self._stream_holder: Any = None  # a never-written container that owns the template stream
        self.template: Any = None  # av stream that outputs copy their parameters from
        self._last_pts = -1
        self._t_by_pts: dict[int, float] = {}
        self._force_key = False
        self._pending_step: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.frames = 0
        self.packets = 0
        self.bytes = 0
        self.encode_ms: collections.deque[float] = collections.deque(maxlen=300)
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=300)
        self._rate: collections.deque[tuple[float, int]] = collections.deque(maxlen=120)

    # --- codec lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        import av

        holder = av.open(os.devnull, "w", format="null")
        try:
            stream = holder.add_stream(
                self.cfg.encoder_name, rate=Fraction(self.cfg.fps).limit_denominator(1001)
            )
        except (av.FFmpegError, ValueError) as exc:
            raise EncoderError(
                f"rendition {self.name}: encoder {self.cfg.encoder_name} unavailable: {exc}"
            ) from None
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(self.cfg.fps).limit_denominator(1001)
        ctx.bit_rate = self.bitrate_kbps * 1000
        ctx.gop_size = self.cfg.gop
        ctx.max_b_frames = 0 if self.cfg.tune == "zerolatency" else ctx.max_b_frames
        # Outputs (MP4 moov, push headers) need SPS/PPS out of band.
        ctx.flags |= av.codec.context.Flags.global_header
        opts: dict[str, str] = {}
        if self.cfg.encoder_name.startswith("lib"):
            opts["preset"] = self.cfg.preset
            if self.cfg.tune:
                opts["tune"] = self.cfg.tune
            if self.cfg.threads:
                opts["threads"] = str(self.cfg.threads)
            # Keyframes exactly every gop frames (fragments and segments are cut on them).
            key = "x264-params" if self.cfg.encoder_name == "libx264" else "x265-params"
            opts[key] = f"keyint={self.cfg.gop}:min-keyint={self.cfg.gop}:scenecut=0"
            if self.cfg.encoder_name == "libx265":
                opts[key] += ":log-level=error"
        ctx.options = opts
        try:
            ctx.open()
        except av.FFmpegError as exc:
            holder.close()
            raise EncoderError(f"rendition {self.name}: cannot open {self.cfg.encoder_name}: {exc}") from None
        self._ctx, self._stream_holder, self.template = ctx, holder, stream
        self._force_key = True

    def close(self) -> list[EncodedPacket]:
        """Flush and release the codec; returns the last packets."""
        out: list[EncodedPacket] = []
        if self._ctx is not None:
            import av

            try:
                out = self._wrap(self._ctx.encode(None))
            except av.FFmpegError:
                out = []
            self._ctx = None
        self._stream_holder = None
        return out

    @property
    def extradata(self) -> bytes | None:
        return None if self._ctx is None else self._ctx.extradata

    def stream_params(self) -> dict[str, Any]:
        """What an output needs to describe the stream before the first packet."""
        return {
            "rendition": self.name,
            "codec": self.cfg.codec,
            "encoder": self.cfg.encoder_name,
            "width": self.width,
            "height": self.height,
            "fps": self.cfg.fps,
            "time_base": TIME_BASE,
            "bitrate_kbps": self.bitrate_kbps,
            "gop": self.cfg.gop,
            "extradata": self.extradata,
            "template": self.template,
            "generation": self.generation,
        }

    # --- adaptation ------------------------------------------------------------------------------

    def request_keyframe(self) -> None:
        self._force_key = True

    def apply_step(self, step: Any) -> None:
        """Take a bitrate/size step (a mapping or object such as ``push.AdaptStep``: ``bitrate_kbps``,
        ``bit_rate`` (bit/s) or ``bitrate_factor`` of the configured rate; ``width``/``height`` or
        ``size``); applied at the next frame. Thread-safe."""
        get = step.get if isinstance(step, dict) else (lambda k, d=None: getattr(step, k, d))
        change: dict[str, Any] = {}
        kbps = get("bitrate_kbps", None)
        for key in ("bit_rate", "bitrate"):  # bit/s (LivePush's AdaptStep says bit_rate)
            if kbps is None and get(key, None) is not None:
                kbps = int(get(key, None)) // 1000
        if kbps is None and get("bitrate_factor", None) is not None:
            kbps = int(self.cfg.bitrate_kbps * float(get("bitrate_factor", None)))
        if kbps is not None:
            change["bitrate_kbps"] = max(50, int(kbps))
        size = get("size", None)
        if isinstance(size, str):
            size = parse_size(size)
        if size is None and get("width", None) and get("height", None):
            size = (int(get("width", None)), int(get("height", None)))
        if size is not None:
            w, h = int(size[0]) // 2 * 2, int(size[1]) // 2 * 2
            change["size"] = (max(16, w), max(16, h))
        with self._lock:
            self._pending_step = {**(self._pending_step or {}), **change}

    def _take_step(self) -> list[EncodedPacket]:
        with self._lock:
            step, self._pending_step = self._pending_step, None
        if not step:
            return []
        new_rate = step.get("bitrate_kbps", self.bitrate_kbps)
        new_size = step.get("size", (self.width, self.height))
        if new_rate == self.bitrate_kbps and new_size == (self.width, self.height):
            return []
        tail = self.close()
        self.bitrate_kbps = new_rate
        self.width, self.height = new_size
        self.generation = next(_GENERATIONS)
        return tail

    # --- encoding --------------------------------------------------------------------------------

    def encode(self, frame: av.VideoFrame, t_capture: float) -> list[EncodedPacket]:
        """Encode one frame captured at ``t_capture`` (monotonic); returns the packets it yields."""
        import av

        out = self._take_step()
        if self._ctx is None:
            self._open()
        if frame.width != self.width or frame.height != self.height or frame.format.name != "yuv420p":
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        pts = round((t_capture - self.origin) / TIME_BASE)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if self._force_key else av.video.frame.PictureType.NONE
        self._force_key = False
        self._t_by_pts[pts] = t_capture
        started = time.perf_counter()
        try:
            packets = self._ctx.encode(frame)
        except av.FFmpegError as exc:
            raise EncoderError(f"rendition {self.name}: encoding failed: {exc}") from None
        self.encode_ms.append((time.perf_counter() - started) * 1000)
        self.frames += 1
        return out + self._wrap(packets)

    def _wrap(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        now = time.monotonic()
        out = []
        for p in packets:
            t = self._t_by_pts.pop(p.pts, None) if p.pts is not None else None
            if t is None:
                t = now
            else:
                self.latency_ms.append((now - t) * 1000)
            if len(self._t_by_pts) > 256:  # an encoder that swallowed frames must not leak
                self._t_by_pts.clear()
            p.time_base = TIME_BASE
            self.packets += 1
            self.bytes += p.size
            self._rate.append((now, p.size))
            out.append(EncodedPacket(p, t, bool(p.is_keyframe), self.generation, self.name))
        return out

    # --- telemetry -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        enc = sorted(self.encode_ms)
        rate = list(self._rate)
        kbps = 0.0
        if len(rate) >= 2 and rate[-1][0] > rate[0][0]:
            kbps = sum(s for _, s in rate[1:]) * 8 / (rate[-1][0] - rate[0][0]) / 1000
        return {
            "encoder": self.cfg.encoder_name,
            "size": f"{self.width}x{self.height}",
            "target_kbps": self.bitrate_kbps,
            "bitrate_kbps": round(kbps, 1),
            "frames": self.frames,
            "encode_ms_avg": round(sum(enc) / len(enc), 2) if enc else None,
            "encode_ms_p95": round(enc[int(len(enc) * 0.95) - 1], 2) if len(enc) >= 20 else None,
            "generation": self.generation,
        }
