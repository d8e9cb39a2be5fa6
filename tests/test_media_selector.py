"""The failover selector, driven with exact timestamps: every switching rule, gap and slate."""

from __future__ import annotations

import pytest

from edge_media.config import FailoverConfig
from edge_media.selector import (
    BACKUP,
    GRID_COLS,
    GRID_ROWS,
    HOLD_AFTER,
    MAIN,
    POINTS,
    SLATE,
    FrameSample,
    Selector,
)

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

IV = 1 / 30  # frame interval at 30 fps


def picture(level: int, luma: float = 120.0) -> FrameSample:
    """A sampled picture whose every region sits at ``level`` (consecutive levels differ by a whole
    luma step in every region: far above the noise floor)."""
    return FrameSample(luma, (bytes([level % 256]) * 64,) * (GRID_ROWS * POINTS))


class Room:
    """Two cameras at 30 fps feeding a selector; time advances frame by frame."""

    def __init__(self, **failover: object) -> None:
        self.events: list[dict] = []
        self.sel = Selector(
            {MAIN: IV, BACKUP: IV},
            FailoverConfig(**failover),
            out_interval=IV,
            on_switch=self.events.append,
            now=0.0,
        )
        self.t = 0.0
        self.out: list = []
        self.walls: list[float] = [0.0]  # wall time at which each output frame was handed out
        self.main = "good"  # good | silent | frozen | black
        self.backup = "good"
        self.n = 0

    def step(self, frames: int = 1) -> None:
        for _ in range(frames):
            self.t += IV
            self.n += 1
            for role, mode in ((MAIN, self.main), (BACKUP, self.backup)):
                if mode == "silent":
                    continue
                level = 7 if mode == "frozen" else self.n
                sample = picture(level, 16.0 if mode == "black" else 120.0)
                self.sel.offer(role, f"{role}@{self.n}", self.t, self.t + 0.002, sample=sample)
            now = self.t + 0.003
            self.poll(now)
            for _ in range(4):  # the pipeline also polls at the deadlines between frames
                deadline = self.sel.next_deadline(now)
                if deadline >= self.t + IV:
                    break
                now = max(deadline, now + 1e-4)
                self.poll(now)

    def poll(self, now: float) -> None:
        got = self.sel.poll(now)
        self.out += got
        self.walls += [now] * len(got)

    def sources_out(self) -> list[str]:
        return [s.source for s in self.out]


def test_starts_on_main_and_passes_its_frames_in_order() -> None:
    room = Room()
    room.step(10)
    assert set(room.sources_out()) == {MAIN}
    times = [s.t_capture for s in room.out]
    assert times == sorted(times) and len(times) == 10
    assert room.events == []


def cadence_ok(room: Room, fps_slack: float = HOLD_AFTER) -> None:
    """The output as a live viewer sees it: media time strictly increasing without a hole, and no
    wall-clock wait between two frames longer than the hold-off of the cadence."""
    times = [s.t_capture for s in room.out]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= IV + 1e-6
    walls = room.walls[1:]
    assert max(b - a for a, b in zip(walls, walls[1:], strict=False)) <= fps_slack * IV + 0.004


@pytest.mark.parametrize("fault,reason", [("silent", "main silent"), ("black", "main black")])
def test_main_fault_switches_to_backup_without_a_hole_or_a_stall(fault: str, reason: str) -> None:
    room = Room()
    room.step(10)
    room.main = fault
    room.step(10)
    assert room.sel.active == BACKUP
    [event] = room.events
    assert event["from"] == MAIN and event["to"] == BACKUP and event["reason"] == reason
    assert event["gap_ms"] <= IV * 1000 + 1
    assert 90 <= event["detect_ms"] <= 140
    # while the switch was being decided the viewer saw main's last picture held at the frame rate
    assert event["held_frames"] >= 1
    assert [s.held for s in room.out].count(True) == event["held_frames"]
    assert all(s.frame == room.out[9].frame for s in room.out if s.held)
    cadence_ok(room)


def test_a_device_reported_lost_switches_at_once() -> None:
    room = Room(holdoff_s=0.5)
    room.step(10)
    room.main = "silent"
    now = room.t + 0.01  # the capture thread's reopen fails 10 ms after the last frame
    room.sel.report_health(MAIN, False, "camera main: unplugged", now)
    room.poll(now)
    assert room.sel.active == BACKUP
    room.step(1)  # the backup's next frame goes out
    [event] = room.events
    assert event["reason"] == "main lost: camera main: unplugged"
    assert event["detect_ms"] <= 15 and event["held_frames"] == 0
    assert event["gap_ms"] <= IV * 1000 + 1
    room.step(5)
    room.main = "good"
    room.step(3)  # frames again, but the capture layer still says lost (its reopen is under way)
    room.sel.report_health(MAIN, False, "camera main: unplugged", room.t)
    assert not room.sel.healthy(MAIN, room.t)
    room.sel.report_health(MAIN, True, "", room.t)
    room.step(12)  # 0.4 s after it came back: still on the backup
    assert room.sel.active == BACKUP
    room.step(6)
    assert room.sel.active == MAIN and room.events[-1]["reason"] == "main healthy for 0.5s"
    cadence_ok(room)


def test_a_frozen_live_camera_switches_after_its_freeze_time() -> None:
    room = Room()
    room.step(10)
    room.main = "frozen"
    room.step(14)  # 0.47 s still: a live camera may hold still that long
    assert room.sel.active == MAIN and not room.events
    room.step(4)
    assert room.sel.active == BACKUP
    [event] = room.events
    assert event["reason"] == "main frozen"
    assert 480 <= event["detect_ms"] <= 540  # from the first still frame: freeze_s, like freezedetect's d
    assert event["gap_ms"] <= IV * 1000 + 1
    room.main = "good"  # moving again at once: the hold-off starts now, not before the freeze
    room.step(140)  # 4.67 s
    assert room.sel.active == BACKUP
    room.step(12)
    assert room.sel.active == MAIN and room.events[-1]["reason"] == "main healthy for 5s"
    cadence_ok(room)


def test_a_static_source_that_stands_still_stays_on_air() -> None:
    room = Room(main={"kind": "static"}, backup={"kind": "static"})
    room.main = room.backup = "frozen"  # a slide on an HDMI capture; a document under the doccam
    room.step(300)  # 10 s
    assert room.sel.active == MAIN and room.events == [] and room.sel.slate_frames == 0
    assert len(room.out) == 300 and {s.source for s in room.out} == {MAIN}
    room.main = "silent"  # but no frames at all is still a dead source
    room.step(6)
    assert room.sel.active == BACKUP and room.events[0]["reason"] == "main silent"


def test_a_static_source_with_its_own_freeze_time() -> None:
    room = Room(main={"kind": "static", "freeze_s": 2.0})
    room.main = "frozen"
    room.step(58)
    assert room.sel.active == MAIN
    room.step(4)
    assert room.sel.active == BACKUP and room.events[0]["reason"] == "main frozen"


def test_detect_frozen_off_keeps_a_frozen_live_camera() -> None:
    room = Room(detect_frozen=False)
    room.main = "frozen"
    room.step(60)
    assert room.sel.active == MAIN and not room.events


def regions(moving: set[int], n: int, noise: int = 0) -> FrameSample:
    """A sampled picture whose regions in ``moving`` change with ``n``; the others show a still scene,
    with ``noise`` luma levels added to one sample in eight (dither below or sensor noise above the
    floor)."""
    rows = []
    for r in range(GRID_ROWS * POINTS):
        row = bytearray()
        for c in range(GRID_COLS):
            region = r // POINTS * GRID_COLS + c
            base = 40 + 4 * region
            for k in range(POINTS):
                jitter = noise * ((n + r + k) % 2) if k == 0 else 0
                row.append((base + 3 * n) % 256 if region in moving else base + jitter)
        rows.append(bytes(row))
    return FrameSample(120.0, tuple(rows))


@pytest.mark.parametrize(
    "moving,noise,frozen",
    [
        ({0}, 0, True),  # an on-screen clock in one corner region: the picture under it is frozen
        ({0, 1, 8, 9}, 0, True),  # a clock across four regions (1/12 of the picture)
        (set(range(12)), 0, False),  # a quarter of the picture moves: someone walks through
        (set(), 1, True),  # dither below the -60 dB floor (1 level on 1 sample in 16)
        (set(), 12, False),  # sensor noise above it
    ],
)
def test_freeze_is_judged_per_region_with_a_noise_floor(moving: set[int], noise: int, frozen: bool) -> None:
    sel = Selector({MAIN: IV}, FailoverConfig(), out_interval=IV, now=0.0)
    goods = [sel.offer(MAIN, n, n * IV, n * IV, sample=regions(moving, n, noise)) for n in range(30)]
    assert goods[:15] == [True] * 15  # 0.5 s of stillness is allowed
    assert sel.tracks[MAIN].frozen is frozen
    assert goods[-1] is not frozen


def test_no_live_area_means_every_region_must_be_still() -> None:
    sel = Selector({MAIN: IV}, FailoverConfig(freeze_live_area=0), out_interval=IV, now=0.0)
    for n in range(30):
        sel.offer(MAIN, n, n * IV, n * IV, sample=regions({0}, n))
    assert not sel.tracks[MAIN].frozen


def test_main_back_only_after_holdoff() -> None:
    room = Room(holdoff_s=1.0)
    room.step(5)
    room.main = "silent"
    room.step(10)
    room.main = "good"
    room.step(25)  # 0.83 s: still on the backup
    assert room.sel.active == BACKUP
    room.step(10)
    assert room.sel.active == MAIN
    back = room.events[-1]
    assert back["to"] == MAIN and back["reason"].startswith("main healthy")
    assert back["gap_ms"] <= IV * 1000 + 1


def test_flapping_main_restarts_the_holdoff() -> None:
    room = Room(holdoff_s=1.0)
    room.step(5)
    room.main = "silent"
    room.step(5)
    for _ in range(3):  # 0.5 s good, 0.2 s dead: never healthy for a whole second
        room.main = "good"
        room.step(15)
        room.main = "silent"
        room.step(6)
    assert room.sel.active == BACKUP


def test_everything_gone_gives_the_slate_then_recovers() -> None:
    room = Room()
    room.step(5)
    room.main = room.backup = "silent"
    room.step(30)
    assert room.sel.active == SLATE
    slate = [s for s in room.out if s.source == SLATE]
    assert len(slate) >= 25 and all(s.frame is None for s in slate)
    times = [s.t_capture for s in room.out]
    assert times == sorted(times)
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= IV + 1e-6  # the stream never stops
    room.backup = "good"
    room.step(3)
    assert room.sel.active == BACKUP
    assert [e["to"] for e in room.events] == [SLATE, BACKUP]


def test_backup_dies_while_active_returns_to_healthy_main_at_once() -> None:
    room = Room(holdoff_s=30)
    room.step(3)
    room.main = "silent"
    room.step(6)
    room.main = "good"
    room.step(3)
    room.backup = "silent"
    room.step(6)
    assert room.sel.active == MAIN
    assert room.events[-1]["reason"] == "backup silent"


def test_no_source_at_all_shows_the_slate_after_the_startup_grace() -> None:
    sel = Selector({MAIN: IV}, FailoverConfig(), out_interval=IV, now=0.0)
    assert sel.poll(0.5) == []
    out = sel.poll(1.2)
    assert sel.active == SLATE and out and out[0].source == SLATE


def test_black_threshold_zero_disables_black_detection() -> None:
    room = Room(black_luma=0)
    room.step(3)
    room.main = "black"
    room.step(10)
    assert room.sel.active == MAIN


def test_a_dark_but_moving_picture_is_not_black() -> None:
    sel = Selector({MAIN: IV}, FailoverConfig(), out_interval=IV, now=0.0)
    assert sel.offer(MAIN, "f", 0.0, 0.0, sample=picture(1, 30.0))
    assert not sel.offer(MAIN, "f", IV, IV, sample=picture(2, 20.0))


def test_random_camera_behaviour_never_breaks_the_output_timeline() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    modes = st.sampled_from(["good", "silent", "frozen", "black"])

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(modes, modes, st.integers(1, 12)), min_size=1, max_size=12))
    def run(script: list[tuple[str, str, int]]) -> None:
        room = Room(holdoff_s=0.2)
        for main, backup, frames in script:
            room.main, room.backup = main, backup
            room.step(frames)
        times = [s.t_capture for s in room.out]
        assert times == sorted(times) and len(set(times)) == len(times)
        # once started, the output never pauses longer than the detection window plus a frame
        assert all(b - a <= 3 * IV + IV + 1e-6 for a, b in zip(times, times[1:], strict=False))
        for e in room.events:
            assert e["from"] != e["to"] and (e["gap_ms"] is None or e["gap_ms"] >= 0)

    run()
