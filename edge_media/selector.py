"""The failover selector: which camera feeds the encoders, frame by frame.

Rules (``[media.failover]``):

- A *good* frame is one that is neither black (mean luma <= ``black_luma``) nor frozen (its luma
  sample is identical to the previous frame's; real sensors never repeat a picture bit for bit).
- A source is *healthy* while its last good frame arrived at most ``silence_intervals`` frame
  intervals ago. Silence, a frozen picture and a black picture therefore all look the same here.
- main unhealthy -> backup (if healthy) else the "signal lost" slate; backup unhealthy -> main if
  healthy, else the slate; from the backup, back to main once main has been healthy for
  ``holdoff_s``; from the slate, to the first source that is healthy again.
- The inactive source is kept hot: its last good frames (``replay_s``, at least the detection window)
  are buffered, so a switch continues the picture from the moment the failed source went bad instead of
  leaving a hole. Every switch is reported with ``gap_ms`` (the hole in the output's media time between
  the last frame of the old source and the first of the new one) and ``detect_ms`` (wall time from the
  old source's last good frame to the decision).

The selector is pure logic over timestamps (no threads, no FFmpeg), so every path is tested with
exact times; ``inspect_frame`` computes the luma figures from an ``av.VideoFrame``.
"""

from __future__ import annotations

import collections
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_media.config import FailoverConfig

MAIN, BACKUP, SLATE = "main", "backup", "slate"
STARTUP_GRACE_S = 1.0
MAX_SLATE_BURST_S = 1.0
LUMA_STEP = 251  # sample one luma byte in 251 (prime: never in step with the line size)


def inspect_frame(frame: Any) -> tuple[float, bytes]:
    """(mean luma of a sparse sample, a digest of that sample) for black and freeze detection."""
    sample = bytes(memoryview(frame.planes[0])[::LUMA_STEP])
    if not sample:
        return 0.0, b""
    return sum(sample) / len(sample), hashlib.blake2b(sample, digest_size=8).digest()


@dataclass(slots=True)
class Selected:
    """A frame for the encoders. ``frame`` is None for a slate frame."""

    frame: Any
    t_capture: float
    source: str


@dataclass(slots=True)
class _Offered:
    frame: Any
    t_capture: float
    t_arrival: float


@dataclass
class _Track:
    interval: float
    threshold: float
    recent: collections.deque[_Offered]
    last_good_arrival: float | None = None
    healthy_since: float | None = None
    last_signature: bytes | None = None
    bad_reason: str = "silent"
    frames: int = 0
    bad_frames: int = 0

    def healthy(self, now: float) -> bool:
        return self.last_good_arrival is not None and now - self.last_good_arrival <= self.threshold


@dataclass
class _PendingSwitch:
    old: str | None
    new: str
    reason: str
    decided_at: float
    prev_t: float | None
    detect_ms: float | None
    data: dict[str, Any] = field(default_factory=dict)


class Selector:
    """Feed it frames with ``offer()``; ``poll(now)`` returns what the encoders get, in order."""

    def __init__(
        self,
        intervals: dict[str, float],
        cfg: FailoverConfig,
        *,
        out_interval: float,
        on_switch: Callable[[dict[str, Any]], None] | None = None,
        now: float = 0.0,
    ) -> None:
        self.cfg = cfg
        self.out_interval = out_interval
        self.on_switch = on_switch or (lambda _event: None)
        self.tracks: dict[str, _Track] = {}
        for role, interval in intervals.items():
            threshold = cfg.silence_intervals * interval
            keep = math.ceil(max(cfg.replay_s, threshold + 2 * interval) / interval) + 2
            self.tracks[role] = _Track(interval, threshold, collections.deque(maxlen=keep))
        self.active: str | None = None
        self.started_at = now
        self.last_out_t: float | None = None
        self._pending: _PendingSwitch | None = None
        self.switches = 0
        self.slate_frames = 0

    # --- input -----------------------------------------------------------------------------------

    def offer(
        self,
        role: str,
        frame: Any,
        t_capture: float,
        t_arrival: float,
        *,
        luma: float | None = None,
        signature: bytes | None = None,
    ) -> bool:
        """Give the selector a frame from ``role``; returns whether it counted as good."""
        track = self.tracks[role]
        track.frames += 1
        reason = ""
        if luma is not None and luma <= self.cfg.black_luma:
            reason = "black"
        elif self.cfg.detect_frozen and signature is not None and signature == track.last_signature:
            reason = "frozen"
        track.last_signature = signature
        if reason:
            track.bad_frames += 1
            track.bad_reason = reason
            return False
        if track.last_good_arrival is None or t_arrival - track.last_good_arrival > track.threshold:
            track.healthy_since = t_arrival
        track.last_good_arrival = t_arrival
        track.bad_reason = "silent"
        track.recent.append(_Offered(frame, t_capture, t_arrival))
        return True

    # --- decisions -------------------------------------------------------------------------------

    def healthy(self, role: str, now: float) -> bool:
        track = self.tracks.get(role)
        return track is not None and track.healthy(now)

    def _switch(self, new: str, reason: str, now: float) -> None:
        old = self.active
        detect_ms = None
        if old in self.tracks and self.tracks[old].last_good_arrival is not None:
            detect_ms = round((now - self.tracks[old].last_good_arrival) * 1000, 1)  # type: ignore[operator]
        self.active = new
        self._pending = _PendingSwitch(old, new, reason, now, self.last_out_t, detect_ms)

    def _decide(self, now: float) -> None:
        main_ok = self.healthy(MAIN, now)
        backup_ok = self.healthy(BACKUP, now)
        active = self.active
        if active is None:
            if main_ok:
                self.active = MAIN
            elif backup_ok:
                self.active = BACKUP
            elif now - self.started_at >= STARTUP_GRACE_S:
                self._switch(SLATE, "no source delivers frames", now)
            return
        if active == MAIN and not main_ok:
            why = f"main {self.tracks[MAIN].bad_reason}" if MAIN in self.tracks else "main missing"
            self._switch(BACKUP if backup_ok else SLATE, why, now)
        elif active == BACKUP:
            main = self.tracks.get(MAIN)
            if (
                main_ok
                and main is not None
                and main.healthy_since is not None
                and now - main.healthy_since >= self.cfg.holdoff_s
            ):
                self._switch(MAIN, f"main healthy for {self.cfg.holdoff_s:g}s", now)
            elif not backup_ok:
                why = f"backup {self.tracks[BACKUP].bad_reason}"
                self._switch(MAIN if main_ok else SLATE, why, now)
        elif active == SLATE:
            if main_ok:
                self._switch(MAIN, "main is back", now)
            elif backup_ok:
                self._switch(BACKUP, "backup is back", now)

    def poll(self, now: float) -> list[Selected]:
        """Decide, then return the frames to encode now (oldest first)."""
        self._decide(now)
        out: list[Selected] = []
        active = self.active
        if active in self.tracks:
            for item in self.tracks[active].recent:  # type: ignore[index]
                if self.last_out_t is None or item.t_capture > self.last_out_t:
                    out.append(Selected(item.frame, item.t_capture, active))  # type: ignore[arg-type]
                    self.last_out_t = item.t_capture
        elif active == SLATE:
            t = self.last_out_t
            if t is None or now - t > MAX_SLATE_BURST_S:
                t = now - self.out_interval
            while t + self.out_interval <= now + 1e-9:
                t += self.out_interval
                out.append(Selected(None, t, SLATE))
            if out:
                self.last_out_t = t
                self.slate_frames += len(out)
        if out and self._pending is not None:
            self._report(self._pending, out)
            self._pending = None
        return out

    def _report(self, sw: _PendingSwitch, out: list[Selected]) -> None:
        first = out[0]
        gap_ms = None if sw.prev_t is None else round((first.t_capture - sw.prev_t) * 1000, 1)
        replayed = sum(1 for s in out if s.t_capture < sw.decided_at)
        self.switches += 1
        self.on_switch(
            {
                "from": sw.old,
                "to": sw.new,
                "reason": sw.reason,
                "gap_ms": gap_ms,
                "detect_ms": sw.detect_ms,
                "replayed_frames": replayed,
            }
        )

    def next_deadline(self, now: float) -> float:
        """When ``poll`` must run again even if no frame arrives."""
        deadlines = [now + 0.05]
        if self.active is None:
            deadlines.append(self.started_at + STARTUP_GRACE_S)
        if self.active in self.tracks:
            track = self.tracks[self.active]  # type: ignore[index]
            if track.last_good_arrival is not None:
                deadlines.append(track.last_good_arrival + track.threshold + 1e-4)
        if self.active == BACKUP and MAIN in self.tracks:
            main = self.tracks[MAIN]
            if main.healthy(now) and main.healthy_since is not None:
                deadlines.append(main.healthy_since + self.cfg.holdoff_s)
        if self.active == SLATE and self.last_out_t is not None:
            deadlines.append(self.last_out_t + self.out_interval)
        return max(now, min(deadlines))

    def state(self, now: float) -> dict[str, Any]:
        return {
            "active": self.active or "starting",
            "switches": self.switches,
            "slate_frames": self.slate_frames,
            "sources": {
                role: {
                    "healthy": t.healthy(now),
                    "reason": "" if t.healthy(now) else t.bad_reason,
                    "frames": t.frames,
                    "bad_frames": t.bad_frames,
                }
                for role, t in self.tracks.items()
            },
        }
