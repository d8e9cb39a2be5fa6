"""The arbiter's lease state machine (drivers/failover_controller/lease.py), on CPython.

A small room model drives it: each terminal toggles its heartbeat every 50 ms while it is up, the
arbiter is ticked every 1-5 ms, and a terminal holds the lease at t iff its last two lease pulses are
both within lease_ms of t (the terminal's rule). Hypothesis throws random fault sequences at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.failover_controller.lease import Arbiter

LEASE, GUARD, DETECT, PULSE, HB = 200, 100, 400, 50, 50


@dataclass
class Room:
    arbiter: Arbiter = field(default_factory=Arbiter)
    now: int = 0
    #: terminal -> list of (start_ms, end_ms) when its heartbeat line does not toggle
    silent: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {"main": [], "backup": []})
    pulses: dict[str, list[int]] = field(default_factory=lambda: {"main": [], "backup": []})
    events: list[tuple[int, dict]] = field(default_factory=list)
    routes: list[tuple[int, int]] = field(default_factory=list)
    fences: dict[str, int] = field(default_factory=lambda: {"main": 0, "backup": 0})
    tie: int = 0
    next_hb: dict[str, int] = field(default_factory=lambda: {"main": 3, "backup": 27})

    def quiet(self, t: str, at: int) -> bool:
        return any(a <= at < b for a, b in self.silent[t])

    def run(self, until: int, steps: list[int] | None = None) -> None:
        i = 0
        while self.now < until:
            step = steps[i % len(steps)] if steps else 2
            i += 1
            self.now += step
            for t in ("main", "backup"):
                while self.next_hb[t] <= self.now:
                    if not self.quiet(t, self.next_hb[t]):
                        self.arbiter.hb_edge(t, self.now)  # seen at the poll after the edge
                    self.next_hb[t] += HB
            for act in self.arbiter.tick(self.now):
                self.apply(act)

    def apply(self, act: tuple) -> None:
        kind = act[0]
        if kind == "pulse":
            self.pulses[act[1]].append(self.now)
        elif kind == "event":
            self.events.append((self.now, act[1]))
        elif kind == "route":
            self.tie = act[1]
            self.routes.append((self.now, act[1]))
        elif kind == "untie":
            self.tie = 0
            self.routes.append((self.now, 0))
        elif kind == "fence":
            self.fences[act[1]] = act[2]
        elif kind == "read_tie":
            self.arbiter.tie_read(self.tie, self.now)

    def held(self, t: str) -> list[tuple[int, int]]:
        """When ``t`` believed it held the lease: after pulse k, until pulse k-1 + lease_ms."""
        p = self.pulses[t]
        return [
            (p[k], min(p[k - 1] + LEASE, p[k + 1] if k + 1 < len(p) else 2**62)) for k in range(1, len(p))
        ]

    def grants(self) -> list[tuple[int, str, str]]:
        return [(t, e["holder"], e["reason"]) for t, e in self.events if e["event"] == "grant"]

    def revokes(self) -> list[tuple[int, str, str]]:
        return [(t, e["holder"], e["reason"]) for t, e in self.events if e["event"] == "revoke"]


def overlaps(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple]:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


# --- the script a technician would follow -----------------------------------------------------------


def test_boot_keeps_the_lines_idle_then_grants_the_preferred_terminal() -> None:
    room = Room()
    room.run(LEASE + GUARD - 10)
    assert room.pulses == {"main": [], "backup": []}, "no lease pulse before lease_ms + guard_ms"
    room.run(1500)
    assert room.grants()[0][1:] == ("main", "granted")
    assert room.tie == 1
    gaps = {b - a for a, b in zip(room.pulses["main"], room.pulses["main"][1:], strict=False)}
    assert max(gaps) <= PULSE + 2, "the holder is pulsed every pulse_ms"
    assert room.pulses["backup"] == []


def test_boot_regrants_the_terminal_the_switcher_shows() -> None:
    room = Room()
    room.tie = 2  # the backup was active before the arbiter restarted
    room.run(1000)
    assert room.grants()[0][1:] == ("backup", "boot_tie")
    assert room.pulses["main"] == []


def test_boot_tie_of_a_dead_terminal_goes_to_the_other() -> None:
    room = Room()
    room.tie = 2
    room.silent["backup"].append((0, 10**9))
    room.run(1000)
    assert room.grants()[0][1] == "main"


def test_a_dead_holder_is_fenced_and_the_other_granted_after_lease_and_guard() -> None:
    room = Room()
    room.run(1000)
    room.silent["main"].append((1000, 10**9))
    room.run(3000)
    ((t_r, who, why),) = room.revokes()
    assert (who, why) == ("main", "heartbeat_lost")
    assert 1000 + DETECT - HB <= t_r <= 1000 + DETECT + 10
    assert room.fences["main"] == 1
    t_g, holder, _ = room.grants()[-1]
    assert holder == "backup"
    assert t_g >= t_r + LEASE + GUARD
    assert room.pulses["backup"][0] - room.pulses["main"][-1] >= LEASE + GUARD
    assert (t_r, 0) in room.routes, "the dead holder's input is untied at once"
    assert room.tie == 2
    assert overlaps(room.held("main"), room.held("backup")) == []


def test_a_glitch_shorter_than_detect_ms_changes_nothing() -> None:
    room = Room()
    room.run(1000)
    room.silent["main"].append((1000, 1000 + DETECT - 2 * HB - 10))
    room.silent["main"].append((2000, 2000 + DETECT - 2 * HB - 10))
    room.run(4000)
    assert room.revokes() == []
    assert [g[1] for g in room.grants()] == ["main"]


def test_a_returning_terminal_stays_standby() -> None:
    room = Room()
    room.run(1000)
    room.silent["main"].append((1000, 3000))  # main dies, comes back at 3 s
    room.run(8000)
    assert [g[1] for g in room.grants()] == ["main", "backup"]
    assert room.arbiter.holder == "backup"
    assert room.fences["main"] == 1, "the returned main stays fenced while standby"


def test_one_stray_edge_does_not_make_a_dead_terminal_alive() -> None:
    arb = Arbiter()
    arb.hb_edge("main", 0)
    arb.hb_edge("main", 1000)
    assert not arb.alive("main", 1001)
    arb.hb_edge("main", 1050)
    assert arb.alive("main", 1051)


def test_the_switcher_reporting_the_holders_input_without_signal_moves_the_lease() -> None:
    room = Room()
    room.run(1000)
    room.arbiter.signal([False, True], room.now)  # main's HDMI dark, heartbeat still toggling
    room.run(1000 + DETECT - 50)
    assert room.revokes() == [], "a signal dip shorter than detect_ms changes nothing"
    room.arbiter.signal([True, True], room.now)
    room.run(1600)
    assert room.revokes() == []
    room.arbiter.signal([False, True], room.now)
    room.run(3000)
    assert room.revokes()[0][1:] == ("main", "signal_lost")
    assert room.arbiter.holder == "backup"
    assert overlaps(room.held("main"), room.held("backup")) == []


def test_both_dead_then_the_first_back_is_granted() -> None:
    room = Room()
    room.run(1000)
    room.silent["main"].append((1000, 10**9))
    room.silent["backup"].append((800, 3000))
    room.run(5000)
    assert room.grants()[-1][1] == "backup"
    assert overlaps(room.held("main"), room.held("backup")) == []


def test_prefer_applies_only_when_nobody_holds() -> None:
    room = Room()
    room.arbiter.command("prefer", "backup")
    room.run(1000)
    assert room.arbiter.holder == "backup"
    room.arbiter.command("prefer", "main")
    room.run(3000)
    assert room.arbiter.holder == "backup", "a live holder is never moved"


# --- random fault sequences -------------------------------------------------------------------------

silences = st.lists(
    st.tuples(st.sampled_from(["main", "backup"]), st.integers(0, 9000), st.integers(10, 2500)),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(
    faults=silences,
    steps=st.lists(st.integers(1, 5), min_size=1, max_size=16),
    tie=st.sampled_from([0, 1, 2]),
    restart_at=st.one_of(st.none(), st.integers(500, 8000)),
    prefer=st.sampled_from(["main", "backup", None]),
)
def test_random_faults_never_give_two_terminals_the_lease(faults, steps, tie, restart_at, prefer) -> None:
    room = Room(arbiter=Arbiter({"prefer": prefer}))
    room.tie = tie
    for t, start, length in faults:
        room.silent[t].append((start, start + length))
    if restart_at is not None:
        room.run(restart_at, steps)
        room.arbiter = Arbiter({"prefer": prefer})  # the arbiter reboots; the lines stop at once
    room.run(12000, steps)

    assert overlaps(room.held("main"), room.held("backup")) == [], "two terminals held the lease"
    # every hand-over keeps the gap: old holder's last pulse + lease + guard <= new holder's first
    seq = sorted([(p, t) for t in ("main", "backup") for p in room.pulses[t]])
    for (p0, t0), (p1, t1) in zip(seq, seq[1:], strict=False):
        if t0 != t1:
            assert p1 - p0 >= LEASE + GUARD, f"{t0} pulsed at {p0}, {t1} at {p1}"
    # a glitch shorter than detect_ms never revokes (the silence must be long enough to count)
    for t_r, who, why in room.revokes():
        assert why == "heartbeat_lost"
        assert any(a <= t_r and b - a >= DETECT - 2 * HB - 10 for a, b in room.silent[who]), (who, t_r)


@settings(max_examples=60, deadline=None)
@given(
    glitches=st.lists(st.tuples(st.integers(0, 100), st.integers(1, DETECT - 2 * HB - 10)), max_size=10),
    steps=st.lists(st.integers(1, 5), min_size=1, max_size=8),
)
def test_random_glitches_shorter_than_detect_ms_never_switch(glitches, steps) -> None:
    room = Room()
    for slot, (offset, length) in enumerate(glitches):  # one glitch per 900 ms: they never join up
        start = 500 + 900 * slot + offset
        room.silent["main"].append((start, start + length))
    room.run(10000, steps)
    assert room.revokes() == []
    assert [g[1] for g in room.grants()] == ["main"]


# --- the SIS lines the arbiter shares with the switcher driver (drivers/switcher/sis_wire.py) ----------


def test_sis_wire_speaks_the_extron_lines() -> None:
    from drivers.switcher import sis_wire as w

    assert w.tie_command(2, 1) == b"02*01!"
    assert w.untie_command(1) == b"00*01!"
    assert w.read_command(1) == b"01%"
    assert w.parse_tie("Out01 In02 All") == (1, 2, "All")
    assert w.parse_tie("Out001  In012 Vid") == (1, 12, "Vid")
    assert w.parse_tie("In02 All") is None and w.parse_tie("Out01 In02 Foo") is None
    assert w.parse_read("02") == 2 and w.parse_read("0002") is None
    assert w.parse_error("E01") == "E01" and w.parse_error("E1") is None
    assert w.parse_verbose("Vrb3") == 3 and w.parse_verbose("Vrb4") is None
    assert w.parse_sig("Sig 1 0 1 1") == [True, False, True, True]
    assert w.parse_sig("Sig1 0") == [True, False]
    assert w.parse_sig("Sig 1 2") is None and w.parse_sig("Signal") is None
    assert w.parse_sig(w.sig_line([False, True]).decode().strip()) == [False, True]
    split = w.LineSplitter()
    assert split.feed(b"Out01 In0") == []
    assert split.feed(b"2 All\r\nSig 1 0\r\n\xff\xfe\r\nE10") == ["Out01 In02 All", "Sig 1 0"]
    assert split.feed(b"\n") == ["E10"]


def test_a_cold_start_waits_settle_ms_for_the_preferred_terminal_before_granting_the_other() -> None:
    """The room powers on and the backup boots first: the main still gets the room if it comes up
    within settle_ms; if it does not, the backup is granted then (not never)."""
    late = Room()
    late.silent["main"] = [(0, 1800)]  # the main's appliance is still starting
    late.run(4000)
    assert late.grants()[0][1] == "main" and late.pulses["backup"] == []
    dead = Room()
    dead.silent["main"] = [(0, 10**6)]
    dead.run(LEASE + GUARD + 3000 - 50)
    assert dead.grants() == [], "the backup waits out settle_ms"
    dead.run(LEASE + GUARD + 3000 + 700)
    assert dead.grants()[0][1] == "backup"
    tied = Room()  # an arbiter restart (the switcher shows the backup) never waits
    tied.tie = 2
    tied.silent["main"] = [(0, 10**6)]
    tied.run(1000)
    assert tied.grants()[0][1:] == ("backup", "boot_tie")
