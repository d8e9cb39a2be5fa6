"""The lease and role rules of a terminal, pure (no clock, no I/O): the failover service and the tests
feed them times and numbers (docs/failover.md, "Lease rules").

- The lease is held at ``now`` iff the last *two* lease edges are both within ``lease_s`` of ``now``:
  one stray edge (a line read again after a SIGSTOP, a glitch) never validates a lease.
- The role epoch: a promotion takes ``max(own, highest seen from the peer) + 1``, persisted before it
  acts. State from the peer whose epoch is lower than the highest seen is stale; an *active* claim at
  an epoch equal to the highest seen, from a sender other than the one that held it, is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["active", "standby"]
# Why a role changed (the ``reason`` of ``failover.role`` and of the role log)
REASONS = ("lease_granted", "lease_lost", "peer_failed", "switch", "prefer", "restart")


def holds_lease(edges: Sequence[float], now: float, lease_s: float) -> bool:
    """Whether the last two ``edges`` (monotonic seconds, oldest first) both lie within ``lease_s``
    before ``now``. An edge stamped after ``now`` (a clock read out of order) does not count."""
    if len(edges) < 2:
        return False
    older, newer = edges[-2], edges[-1]
    return now - lease_s <= older <= newer <= now


def lease_expires_at(edges: Sequence[float], lease_s: float) -> float | None:
    """When the lease the edges prove runs out unless more edges come (None: not held by them)."""
    if len(edges) < 2:
        return None
    return edges[-2] + lease_s


def promotion_epoch(own: int, peer_seen: int) -> int:
    """The epoch a terminal takes when it becomes active."""
    return max(own, peer_seen) + 1


@dataclass
class EpochGuard:
    """The highest role epoch this terminal has seen, and who claimed it as active (None: unknown,
    e.g. learnt from a standby's status)."""

    highest: int = 0
    holder: str | None = None

    def check(self, sender: str, epoch: int, role: Role) -> str | None:
        """Why a message from ``sender`` at ``epoch`` claiming ``role`` is refused, or None (then
        ``note`` it)."""
        if epoch < self.highest:
            return f"stale epoch {epoch} (highest seen {self.highest})"
        if role == "active" and epoch == self.highest and self.holder not in (None, sender):
            return f"epoch {epoch} is already {self.holder}'s"
        return None

    def note(self, sender: str, epoch: int, role: Role) -> None:
        if epoch > self.highest:
            self.highest, self.holder = epoch, (sender if role == "active" else None)
        elif epoch == self.highest and role == "active" and self.holder is None:
            self.holder = sender

    def own(self, me: str, epoch: int) -> None:
        """This terminal took ``epoch`` (a promotion)."""
        self.highest, self.holder = max(self.highest, epoch), me


def next_role(role: Role, holds: bool) -> Role | None:
    """The role to change to now, or None: active exactly while the lease is held."""
    if role == "active" and not holds:
        return "standby"
    if role == "standby" and holds:
        return "active"
    return None


Plan = Literal["take_over", "resume", "drop_then_resume"]


def promotion_plan(
    previous_epoch: int,
    held_session_id: str | None,
    peer_epoch: int | None,
    peer_session_id: str | None,
    peer_ended_recently: Sequence[str] = (),
) -> Plan:
    """What the session does when this terminal becomes active. ``previous_epoch`` is the epoch this
    terminal was last active at; ``peer_*`` the peer's newest active state (None: never heard).

    - the peer was active after us and had a session: take it over (same session id);
    - the peer was active after us and ended the session we still hold: forget ours, then act;
    - otherwise act again (our own session, if we hold one, resumes; a crash's is reported)."""
    if peer_epoch is None or peer_epoch <= previous_epoch:
        return "resume"
    if peer_session_id is not None:
        return "take_over"
    if held_session_id is not None and held_session_id in peer_ended_recently:
        return "drop_then_resume"
    return "resume"


def should_drop(
    own_epoch: int,
    held_session_id: str | None,
    peer_epoch: int,
    peer_session_id: str | None,
    peer_ended_recently: Sequence[str] = (),
) -> bool:
    """On standby: the active peer, at a higher epoch than ours, holds (or ended) the session we still
    hold, so ours is forgotten."""
    if held_session_id is None or peer_epoch <= own_epoch:
        return False
    return held_session_id == peer_session_id or held_session_id in peer_ended_recently


def should_yield_for_prefer(
    *,
    my_terminal: str,
    prefer: str | None,
    role: Role,
    healthy: bool,
    peer_healthy_for_s: float,
    peer_role: Role | None,
    idle: bool,
    settle_s: float = 3.0,
) -> bool:
    """The non-preferred active terminal hands the room to the preferred one only when both are
    healthy (the peer for ``settle_s`` at least, a standby), and no villager session is running."""
    return (
        prefer is not None
        and prefer != my_terminal
        and role == "active"
        and healthy
        and peer_role == "standby"
        and peer_healthy_for_s >= settle_s
        and idle
    )
