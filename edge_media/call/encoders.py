"""The call's video encoders: aiortc's VP8 and H.264, with the bitrate changed only when it is worth a
keyframe.

aiortc's encoders cannot change the bitrate of an open FFmpeg encoder: a target more than 10 % away from
the open one makes them build a new encoder, whose first frame is a keyframe (about ten times a
predicted frame). Two things set that target: the server's REMB, which aiortc writes straight into
every encoder it reaches, and the call's own uplink controller (``session.RateController``). Janus
repeats a REMB of the room's cap every few seconds and the controller then puts its share back, so
with aiortc's encoders as they are the document camera was rebuilt twice per REMB (a keyframe every
2-3 s) and the room camera every 2 s while the rate ramped up. Each keyframe is a burst the clerk's
jitter buffer must absorb (latency) and an expensive encode (CPU).

Here, a REMB is only recorded (``remb_bps``, which the controller reads as the server's cap), and
``set_rate`` changes the encoder's target only when the change is worth a new encoder: at once for a
drop of more than ``DOWN`` (congestion must be answered), and for a rise of more than ``UP`` no sooner
than ``UP_HOLD_S`` after the last change. ``rebuilds`` counts the changes that cost a keyframe.

The VP8 encoder is also tuned for a Raspberry-Pi-class CPU, as libwebrtc tunes its own VP8 on ARM
(``VP8_TUNING``): ``cpu-used`` -12 instead of aiortc's desktop -6 (libvpx's realtime speed steps trade a
little quality per bit for encode time), and the temporal denoiser on luma only (1, not aiortc's 4: the
chroma pass costs as much again and buys little on a room camera). Measured on this machine's 640x360
synthetic room picture at 500 kbit/s: about 1.9 ms instead of 2.6 ms a frame, the bitrate unchanged.

``install()`` makes aiortc's senders use these classes. It patches ``aiortc.rtcrtpsender.get_encoder``
for the whole process, as kiosk-media is the only user of aiortc on the device; audio codecs pass
through unchanged.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiortc.codecs import h264 as aiortc_h264
from aiortc.codecs import vpx as aiortc_vpx

# libvpx options aiortc's VP8 encoder gets instead of its own (see the module docstring).
VP8_TUNING = {"cpu-used": "-12", "noise-sensitivity": "1"}
MIN_BPS = 30_000  # aiortc's floor is 250 kbit/s: two video tracks could then never share a village uplink
MAX_BPS = 1_500_000
DOWN = 0.85  # a new target below 85 % of the current one is applied at once
UP = 1.25  # a rise is applied once it is 25 % or more ...
UP_HOLD_S = 4.0  # ... and the last change is this old


class SteadyRate:
    """The rate half of a steady encoder; mixed into aiortc's encoder classes below."""

    _private: str  # the name-mangled attribute the parent's options read (its rc buffer size)

    def _steady_init(self) -> None:
        self.remb_bps: int | None = None
        self._rate_bps = int(getattr(self, self._private))
        self._changed_at = -math.inf
        self.rebuilds = 0

    @property
    def target_bitrate(self) -> int:
        return self._rate_bps

    @target_bitrate.setter
    def target_bitrate(self, bps: int) -> None:
        """aiortc's REMB path: recorded for the controller, not applied."""
        self.remb_bps = int(bps)

    def set_rate(self, bps: float, now: float | None = None) -> bool:
        """Ask for ``bps``; True if the encoder's target changed (its next frame is a keyframe)."""
        now = time.monotonic() if now is None else now
        bps = int(max(MIN_BPS, min(bps, MAX_BPS)))
        current = self._rate_bps
        if bps < current * DOWN or (bps > current * UP and now - self._changed_at >= UP_HOLD_S):
            self._rate_bps = bps
            setattr(self, self._private, bps)
            self._changed_at = now
            if getattr(self, "codec", None) is not None:
                self.rebuilds += 1
            return True
        return False


class _TunedContext:
    """An FFmpeg encoder context as aiortc's encoder builds it, with ``tuning`` laid over the options
    aiortc sets (before the context opens, at the first frame); everything else passes through.
    ``options_given``: what the context was given (FFmpeg consumes the options it knows as it opens)."""

    __slots__ = ("_ctx", "_tuning", "options_given")

    def __init__(self, ctx: Any, tuning: dict[str, str]) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_tuning", tuning)
        object.__setattr__(self, "options_given", {})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **self._tuning}
            object.__setattr__(self, "options_given", dict(value))
        setattr(self._ctx, name, value)


class SteadyVp8Encoder(SteadyRate, aiortc_vpx.Vp8Encoder):
    _private = "_Vp8Encoder__target_bitrate"

    def __init__(self) -> None:
        self._codec: Any = None
        super().__init__()
        self._steady_init()

    @property
    def codec(self) -> Any:
        return self._codec

    @codec.setter
    def codec(self, ctx: Any) -> None:
        """aiortc assigns a new libvpx context here (or None to rebuild): tuned for the device's CPU."""
        self._codec = None if ctx is None else _TunedContext(ctx, VP8_TUNING)


class SteadyH264Encoder(SteadyRate, aiortc_h264.H264Encoder):
    _private = "_H264Encoder__target_bitrate"

    def __init__(self) -> None:
        super().__init__()
        self._steady_init()


_installed = False


def install() -> None:
    """Make aiortc's RTP senders build the steady encoders for VP8 and H.264 (idempotent)."""
    global _installed
    if _installed:
        return
    from aiortc import rtcrtpsender

    original = rtcrtpsender.get_encoder

    def get_encoder(codec: Any) -> Any:
        mime = codec.mimeType.lower()
        if mime == "video/vp8":
            return SteadyVp8Encoder()
        if mime == "video/h264":
            return SteadyH264Encoder()
        return original(codec)

    rtcrtpsender.get_encoder = get_encoder
    _installed = True
