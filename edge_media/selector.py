"""The failover selector: which camera feeds the encoders, frame by frame.

Rules (``[media.failover]``, per source ``[media.failover.main]`` / ``[media.failover.backup]``):

- A *good* frame is one that is neither black (mean luma <= ``black_luma``) nor frozen.
- *Frozen* is judged the way FFmpeg's ``freezedetect`` does, per region: the picture is sampled on a
  grid of ``GRID_COLS`` x ``GRID_ROWS`` regions; a region is *still* while the mean absolute
  difference of its luma samples from the frame that started the still run (freezedetect's reference
  frame, not the previous frame, so a slow drift cannot hide a freeze) is at most the noise floor
  ``freeze_noise_db`` (freezedetect's ``n``, -60 dB = 0.001 of full scale); a picture is still while
  at most ``freeze_live_area`` of its regions change (an on-screen clock must not keep a frozen
  camera on air); a source is frozen once its picture has been still for its ``freeze_s``
  (freezedetect's ``d``). A *live* room camera defaults to 0.5 s (a real sensor's noise is far above
  the floor, so only a hung ISP, a stuck UVC buffer or a frozen encoder output stays still); a
  *static* source (an HDMI capture of slides, a document camera, a test pattern) defaults to 0,
  never: its picture may rightly stand still for an hour, and it is alive while frames arrive.
- A source is *healthy* while it is not frozen, its capture layer has not reported it lost
  (``report_health``: a device gone, EIO, counts at once, with no waiting for the silence window),
  and its last good frame arrived at most ``silence_intervals`` frame intervals ago.
- main unhealthy -> backup (if healthy) else the "signal lost" slate; backup unhealthy -> main if
  healthy, else the slate; from the backup, back to main once main has been healthy for
  ``holdoff_s``; from the slate, to the first source that is healthy again.
- The output keeps its cadence: when the active source's next frame is ``HOLD_AFTER`` output
  intervals late, its last frame is handed out again (a *held* frame) at the output rate, so a live
  viewer without a jitter buffer sees a picture that stands still for the detection time, never a
  stall. The inactive source is kept hot and its last good frames (``replay_s``) are buffered, so a
  switch decided before any frame was held continues the picture from the moment the failed source
  went bad. Every switch is reported with ``gap_ms`` (the hole in the output's media time between the
  last frame of the old source and the first of the new one), ``held_frames`` and ``detect_ms`` (wall
  time from the old source's last good frame, or for a freeze from the first still frame, to the
  decision).

The selector is pure logic over timestamps (no threads, no FFmpeg), so every path is tested with
exact times; ``inspect_frame`` takes the luma sample from an ``av.VideoFrame``.
"""

from __future__ import annotations

import collections
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from edge_media.config import FailoverConfig

MAIN, BACKUP, SLATE = "main", "backup", "slate"
STARTUP_GRACE_S = 1.0
MAX_SLATE_BURST_S = 1.0
HOLD_AFTER = 1.5  # output intervals without a frame from the active source -> hold its last frame
GRID_COLS, GRID_ROWS = 8, 6  # freeze regions
POINTS = 8  # luma samples per region side: 64 x 48 samples per picture, whatever its size


class FrameSample(NamedTuple):
    """What the selector knows of a picture: its sampled mean luma and the luma samples, one
    ``bytes`` per sample row (``GRID_ROWS * POINTS`` rows of up to ``GRID_COLS * POINTS``)."""

    luma: float
    rows: tuple[bytes, ...]


def inspect_frame(frame: Any) -> FrameSample:
    """Sample the luma plane of ``frame`` on a fixed grid (cheap: 3072 bytes, sliced in C)."""
    plane = frame.planes[0]
    width, height, line = frame.width, frame.height, plane.line_size
    buf = memoryview(plane)
    nx, ny = GRID_COLS * POINTS, GRID_ROWS * POINTS
    step_x, step_y = max(1, width // nx), max(1, height // ny)
    x0, y0 = step_x // 2, step_y // 2
    count_x = min(nx, (width - x0 + step_x - 1) // step_x)
    rows = tuple(
        bytes(buf[y * line + x0 : y * line + x0 + step_x * count_x : step_x])
        for y in range(y0, min(height, y0 + step_y * ny), step_y)
    )
    total = sum(len(r) for r in rows)
    if not total:
        return FrameSample(0.0, ())
    return FrameSample(sum(b"".join(rows)) / total, rows)


def moving_share(ref: FrameSample, cur: FrameSample, noise_levels: float) -> float:
    """The share of regions of ``cur`` whose mean absolute luma difference from ``ref`` exceeds
    ``noise_levels`` (in luma levels); 1.0 when the two cannot be compared (another size)."""
    if len(ref.rows) != len(cur.rows) or not cur.rows or len(ref.rows[0]) != len(cur.rows[0]):
        return 1.0
    nrows, ncols = len(cur.rows), len(cur.rows[0])
    sad = [0] * (GRID_COLS * GRID_ROWS)
    count = [0] * (GRID_COLS * GRID_ROWS)
    bounds = [(c * ncols // GRID_COLS, (c + 1) * ncols // GRID_COLS) for c in range(GRID_COLS)]
    for r, (a, b) in enumerate(zip(ref.rows, cur.rows, strict=True)):
        base = r * GRID_ROWS // nrows * GRID_COLS
        same = a == b
        for c, (lo, hi) in enumerate(bounds):
            count[base + c] += hi - lo
            if not same:
                sad[base + c] += sum(map(abs, map(operator.sub, a[lo:hi], b[lo:hi])))
    regions = [(s, n) for s, n in zip(sad, count, strict=True) if n]
    moving = sum(1 for s, n in regions if s > noise_levels * n)
    return moving / len(regions) if regions else 1.0


@dataclass(slots=True)
class Selected:
    """A frame for the encoders. ``frame`` is None for a slate frame; ``held`` marks a repeat of the
    active source's last frame, handed out to keep the output's cadence."""

    frame: Any
    t_capture: float
    source: str
    held: bool = False


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
    kind: str = "live"
    freeze_s: float = 0.0  # 0: a still picture never counts as frozen
    last_good_arrival: float | None = None
    healthy_since: float | None = None
    bad_reason: str = "silent"
    lost: str = ""  # the capture layer's reason while it reports the device lost
    # the still run, as freezedetect keeps it: the frame that started it and when
    still_ref: FrameSample | None = None
    still_t: float = 0.0
    still_arrival: float = 0.0
    frozen: bool = False
    frames: int = 0
    bad_frames: int = 0
    held_frames: int = 0

    def healthy(self, now: float) -> bool:
        return (
            not self.lost
            and not self.frozen
            and self.last_good_arrival is not None
            and now - self.last_good_arrival <= self.threshold
        )


@dataclass
class _PendingSwitch:
    old: str | None
    new: str
    reason: str
    decided_at: float
    prev_t: float | None
    detect_ms: float | None
    held: int
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
        # freezedetect's noise is a share of full scale (1 << bitdepth); ours is in 8-bit luma levels
        self.noise_levels = 10 ** (cfg.freeze_noise_db / 20) * 256
        self.tracks: dict[str, _Track] = {}
        for role, interval in intervals.items():
            threshold = cfg.silence_intervals * interval
            keep = math.ceil(max(cfg.replay_s, threshold + 2 * interval) / interval) + 2
            policy = cfg.source(role)
            self.tracks[role] = _Track(
                interval,
                threshold,
                collections.deque(maxlen=keep),
                kind=policy.kind,
                freeze_s=policy.freeze_after_s if cfg.detect_frozen else 0.0,
            )
        self.active: str | None = None
        self.started_at = now
        self.last_out_t: float | None = None
        self._last_out_wall: float | None = None  # when the active source's last frame went out
        self._last_frame: Any = None  # ... and that frame, for holding it
        self._held_run = 0
        self._pending: _PendingSwitch | None = None
        self.switches = 0
        self.slate_frames = 0
        self.held_frames = 0

    # --- input -----------------------------------------------------------------------------------

    def offer(
        self,
        role: str,
        frame: Any,
        t_capture: float,
        t_arrival: float,
        *,
        sample: FrameSample | None = None,
    ) -> bool:
        """Give the selector a frame from ``role`` (``sample`` from ``inspect_frame``); returns whether
        it counted as good."""
        track = self.tracks[role]
        track.frames += 1
        was_healthy = track.healthy(t_arrival)  # before this frame: frozen, lost or silent till now
        reason = ""
        if sample is not None and track.freeze_s > 0:
            still = track.still_ref is not None and (
                moving_share(track.still_ref, sample, self.noise_levels) <= self.cfg.freeze_live_area
            )
            if not still:
                track.still_ref, track.still_t, track.still_arrival = sample, t_capture, t_arrival
            track.frozen = still and t_capture - track.still_t >= track.freeze_s - 1e-6
        if sample is not None and self.cfg.black_luma > 0 and sample.luma <= self.cfg.black_luma:
            reason = "black"
        elif track.frozen:
            reason = "frozen"
        if reason:
            track.bad_frames += 1
            track.bad_reason = reason
            return False
        if not was_healthy:
            track.healthy_since = t_arrival
        track.last_good_arrival = t_arrival
        track.bad_reason = "silent"
        track.recent.append(_Offered(frame, t_capture, t_arrival))
        return True

    def report_health(self, role: str, ok: bool, reason: str, now: float) -> None:
        """What the capture layer says of ``role`` after its queued frames were offered: not ok (the
        device is gone, EIO, the stream ended) makes the source unhealthy at once."""
        track = self.tracks.get(role)
        if track is None:
            return
        if not ok:
            track.lost = reason or "lost"
        elif track.lost:
            track.lost = ""
            track.healthy_since = now  # back: the hold-off counts from now

    # --- decisions -------------------------------------------------------------------------------

    @property
    def switching(self) -> bool:
        """A switch is decided (``active`` is the new source) but its event waits for its first frame."""
        return self._pending is not None

    def healthy(self, role: str, now: float) -> bool:
        track = self.tracks.get(role)
        return track is not None and track.healthy(now)

    def _why(self, role: str) -> str:
        track = self.tracks.get(role)
        if track is None:
            return f"{role} missing"
        if track.lost:
            return f"{role} lost: {track.lost}"
        return f"{role} {track.bad_reason}"

    def _switch(self, new: str, reason: str, now: float) -> None:
        old = self.active
        detect_ms = None
        track = self.tracks.get(old) if old is not None else None
        if track is not None and track.frozen:
            detect_ms = round((now - track.still_arrival) * 1000, 1)
        elif track is not None and track.last_good_arrival is not None:
            detect_ms = round((now - track.last_good_arrival) * 1000, 1)
        # pending first: another thread that sees the new ``active`` also sees ``switching``
        self._pending = _PendingSwitch(old, new, reason, now, self.last_out_t, detect_ms, self._held_run)
        self.active = new

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
            self._switch(BACKUP if backup_ok else SLATE, self._why(MAIN), now)
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
                self._switch(MAIN if main_ok else SLATE, self._why(BACKUP), now)
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
            if out:
                self._last_out_wall, self._last_frame, self._held_run = now, out[-1].frame, 0
            else:
                self._hold(active, now, out)  # type: ignore[arg-type]
        elif active == SLATE:
            self._last_frame = None
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

    def _hold(self, active: str, now: float, out: list[Selected]) -> None:
        """No new frame from the active source: repeat its last one at the output cadence."""
        if self._last_frame is None or self._last_out_wall is None or self.last_out_t is None:
            return
        if now - self._last_out_wall > MAX_SLATE_BURST_S:  # the thread was stuck: no burst
            self._last_out_wall = now - HOLD_AFTER * self.out_interval
        while now - self._last_out_wall >= HOLD_AFTER * self.out_interval - 1e-9:
            self._last_out_wall += self.out_interval
            self.last_out_t += self.out_interval
            out.append(Selected(self._last_frame, self.last_out_t, active, held=True))
        self._held_run += len(out)
        self.held_frames += len(out)
        self.tracks[active].held_frames += len(out)

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
                "held_frames": sw.held,
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
            if self._last_out_wall is not None and self._last_frame is not None:
                deadlines.append(self._last_out_wall + HOLD_AFTER * self.out_interval)
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
            "held_frames": self.held_frames,
            "sources": {
                role: {
                    "kind": t.kind,
                    "healthy": t.healthy(now),
                    "reason": "" if t.healthy(now) else self._why(role).split(" ", 1)[1],
                    "frames": t.frames,
                    "bad_frames": t.bad_frames,
                    "held_frames": t.held_frames,
                }
                for role, t in self.tracks.items()
            },
        }
