"""The lease and role rules of a terminal (appliance/failover/lease.py): pure, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from appliance.failover.config import FailoverConfig, split_host_port
from appliance.failover.lease import (
    EpochGuard,
    holds_lease,
    lease_expires_at,
    next_role,
    promotion_epoch,
    promotion_plan,
    should_drop,
    should_yield_for_prefer,
)

LEASE = 0.2


def test_two_recent_edges_hold_the_lease() -> None:
    assert holds_lease([10.00, 10.05], now=10.06, lease_s=LEASE)
    assert holds_lease([10.00, 10.05], now=10.20, lease_s=LEASE)  # the older edge exactly lease_s old


def test_one_edge_never_holds_it() -> None:
    assert not holds_lease([], now=1.0, lease_s=LEASE)
    assert not holds_lease([0.99], now=1.0, lease_s=LEASE)


def test_a_stray_edge_after_a_stall_does_not_validate() -> None:
    """Stopped for a second, the line read again once: the edge before the stall is far too old."""
    assert not holds_lease([9.0, 10.0], now=10.001, lease_s=LEASE)


def test_the_lease_runs_out_when_the_pulses_stop() -> None:
    edges = [5.0, 5.05]
    assert holds_lease(edges, 5.19, LEASE)
    assert not holds_lease(edges, 5.2001, LEASE)
    assert lease_expires_at(edges, LEASE) == 5.2
    assert lease_expires_at([5.0], LEASE) is None


def test_an_edge_from_the_future_does_not_count() -> None:
    assert not holds_lease([1.0, 1.3], now=1.1, lease_s=LEASE)


@given(
    st.lists(st.floats(0, 100, allow_nan=False), min_size=0, max_size=6),
    st.floats(0, 100, allow_nan=False),
    st.floats(0.01, 5, allow_nan=False),
)
def test_held_means_the_last_two_edges_are_within_the_lease(
    edges: list[float], now: float, lease: float
) -> None:
    edges = sorted(edges)
    held = holds_lease(edges, now, lease)
    if held:
        assert len(edges) >= 2
        assert all(now - lease <= e <= now for e in edges[-2:])
        # and it is no longer held once lease_s has passed since the older of the two
        assert not holds_lease(edges, edges[-2] + lease + 1e-6, lease)
    elif len(edges) >= 2 and all(now - lease <= e <= now for e in edges[-2:]):
        raise AssertionError("two recent edges must hold the lease")


def test_promotion_takes_the_highest_epoch_seen_plus_one() -> None:
    assert promotion_epoch(0, 0) == 1
    assert promotion_epoch(4, 2) == 5
    assert promotion_epoch(2, 7) == 8


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_a_promotion_epoch_is_above_everything_seen(own: int, seen: int) -> None:
    e = promotion_epoch(own, seen)
    assert e > own and e > seen


def test_stale_state_is_refused() -> None:
    g = EpochGuard()
    g.own("kiosk-main", 4)
    assert g.check("kiosk-backup", 3, "active") == "stale epoch 3 (highest seen 4)"
    assert g.check("kiosk-backup", 3, "standby") is not None


def test_an_active_claim_at_an_epoch_already_held_by_another_is_refused() -> None:
    g = EpochGuard()
    g.own("kiosk-main", 4)
    assert "already kiosk-main's" in (g.check("kiosk-backup", 4, "active") or "")
    assert g.check("kiosk-main", 4, "active") is None
    # a standby's status that has seen epoch 4 is fine
    assert g.check("kiosk-backup", 4, "standby") is None


def test_a_higher_epoch_is_learnt_with_its_holder() -> None:
    g = EpochGuard()
    g.own("kiosk-main", 4)
    assert g.check("kiosk-backup", 5, "active") is None
    g.note("kiosk-backup", 5, "active")
    assert (g.highest, g.holder) == (5, "kiosk-backup")
    assert g.check("kiosk-main", 5, "active") is not None
    g.note("kiosk-backup", 6, "standby")  # a status: the holder of 6 is unknown
    assert (g.highest, g.holder) == (6, None)
    assert g.check("kiosk-main", 6, "active") is None


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 20), st.sampled_from(["active", "standby"]))
    )
)
def test_the_guard_never_goes_back_and_never_gives_one_epoch_two_active_holders(msgs) -> None:
    g = EpochGuard()
    holders: dict[int, str] = {}
    last = 0
    for sender, epoch, role in msgs:
        if g.check(sender, epoch, role) is None:
            g.note(sender, epoch, role)
            if role == "active":
                assert holders.setdefault(epoch, sender) == sender
        assert g.highest >= last
        last = g.highest


def test_active_exactly_while_the_lease_is_held() -> None:
    assert next_role("standby", True) == "active"
    assert next_role("active", False) == "standby"
    assert next_role("active", True) is None
    assert next_role("standby", False) is None


def test_promotion_takes_over_the_peers_newer_session() -> None:
    assert promotion_plan(3, None, 4, "s-1") == "take_over"
    assert promotion_plan(3, "s-0", 4, "s-1") == "take_over"


def test_promotion_resumes_our_own_session_when_the_peer_is_not_newer() -> None:
    assert promotion_plan(5, "s-1", 4, "s-0") == "resume"
    assert promotion_plan(5, "s-1", None, None) == "resume"
    assert promotion_plan(3, None, 4, None) == "resume"


def test_promotion_forgets_a_session_the_peer_ended() -> None:
    assert promotion_plan(3, "s-1", 4, None, ["s-1"]) == "drop_then_resume"


def test_a_standby_drops_the_session_the_active_holds_at_a_higher_epoch() -> None:
    assert should_drop(3, "s-1", 4, "s-1")
    assert should_drop(3, "s-1", 4, "s-2", ["s-1"])
    assert not should_drop(4, "s-1", 4, "s-1")  # not higher
    assert not should_drop(3, "s-1", 4, "s-2")  # the peer has another one; ours stays held
    assert not should_drop(3, None, 4, "s-2")


def prefer(**kw):
    base = dict(
        my_terminal="backup",
        prefer="main",
        role="active",
        healthy=True,
        peer_healthy_for_s=5.0,
        peer_role="standby",
        idle=True,
    )
    return should_yield_for_prefer(**{**base, **kw})


def test_the_non_preferred_active_yields_only_when_idle_and_both_healthy() -> None:
    assert prefer()
    assert not prefer(idle=False)  # never mid-session
    assert not prefer(my_terminal="main")  # it is the preferred one
    assert not prefer(prefer=None)
    assert not prefer(role="standby")
    assert not prefer(healthy=False)
    assert not prefer(peer_healthy_for_s=1.0)  # the peer only just came back
    assert not prefer(peer_role="active")


# --- [failover] config ------------------------------------------------------------------------------


def test_the_config_of_a_pair_terminal() -> None:
    cfg = FailoverConfig(
        enabled=True,
        listen="10.71.3.1:7700",
        peer="10.71.3.2:7700",
        pair_key_file="/etc/kiosk/pair.key",
        prefer="",
    )
    assert (cfg.heartbeat_pin, cfg.lease_pin, cfg.heartbeat_ms, cfg.lease_ms) == (5, 6, 50, 200)
    assert cfg.prefer is None  # TOML has no null: "" says no preference
    assert split_host_port(cfg.peer) == ("10.71.3.2", 7700)
    assert split_host_port("[::1]:7700") == ("::1", 7700)
    assert not FailoverConfig().enabled  # absent: a single terminal


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"enabled": True, "peer": "10.0.0.2:7700"}, "set pair_key_file"),
        ({"enabled": True, "pair_key_file": "/k"}, "set peer"),
        ({"peer": "10.0.0.2"}, "must be host:port"),
        ({"peer": "10.0.0.2:70000"}, "must be host:port"),
        ({"heartbeat_pin": 6}, "both use GPIO6"),
        ({"lease_pin": 40}, "BCM GPIO number"),
        ({"prefer": "either"}, "main"),
        ({"lease_ms": 5}, "greater than or equal"),
        ({"hearbeat_ms": 50}, "Extra inputs"),
    ],
)
def test_a_wrong_failover_config_says_what_is_wrong(fields: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        FailoverConfig(**fields)
    assert fragment in str(err.value)
