"""The failover selector, driven with exact timestamps: every switching rule, gap and slate."""

from __future__ import annotations

import pytest

from edge_media.config import FailoverConfig
from edge_media.selector import BACKUP, MAIN, SLATE, Selector

IV = 1 / 30  # frame interval at 30 fps


class Room:
    """Two cameras at 30 fps feeding a selector; time advances frame by frame."""

    def __init__(self, **failover: float) -> None:
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
                sig = b"same" if mode == "frozen" else f"{role}{self.n}".encode()
                luma = 16.0 if mode == "black" else 120.0
                self.sel.offer(role, f"{role}@{self.n}", self.t, self.t + 0.002, luma=luma, signature=sig)
            self.out += self.sel.poll(self.t + 0.003)
            # the pipeline also polls at the deadlines between frames
            deadline = self.sel.next_deadline(self.t + 0.003)
            if deadline < self.t + IV:
                self.out += self.sel.poll(deadline)

    def sources_out(self) -> list[str]:
        return [s.source for s in self.out]


def test_starts_on_main_and_passes_its_frames_in_order() -> None:
    room = Room()
    room.step(10)
    assert set(room.sources_out()) == {MAIN}
    times = [s.t_capture for s in room.out]
    assert times == sorted(times) and len(times) == 10
    assert room.events == []


@pytest.mark.parametrize(
    "fault,reason", [("silent", "main silent"), ("frozen", "main frozen"), ("black", "main black")]
)
def test_main_fault_switches_to_backup_without_a_hole(fault: str, reason: str) -> None:
    room = Room()
    room.step(10)
    room.main = fault
    room.step(10)
    assert room.sel.active == BACKUP
    [event] = room.events
    assert event["from"] == MAIN and event["to"] == BACKUP and event["reason"] == reason
    # the backup's frames from the moment main went bad are replayed: the output has no hole
    assert event["gap_ms"] <= IV * 1000 + 1
    assert 90 <= event["detect_ms"] <= 140
    assert event["replayed_frames"] >= 2
    times = [s.t_capture for s in room.out]
    assert times == sorted(times)
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= IV + 1e-6


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
    assert sel.offer(MAIN, "f", 0.0, 0.0, luma=30.0, signature=b"a")
    assert not sel.offer(MAIN, "f", IV, IV, luma=20.0, signature=b"b")


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
