"""The durable outbox on its own: seq never reused, de-duplication, quota policy, power-cut safety."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from appliance.outbox import Outbox


async def test_seq_is_never_reused_after_delivery_and_reopen(tmp_path: Path):
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9)
    seqs = [await box.append("t", {"i": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    await box.delete(seqs)
    assert box.depth == 0
    await box.close()
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9)
    assert await box.append("t", {}) == 6, "AUTOINCREMENT keeps the high-water mark"
    await box.close()


async def test_producer_ids_are_stored_once(tmp_path: Path):
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9)
    assert await box.append("t", {}, producer_id="ui/1") == 1
    assert await box.append("t", {}, producer_id="ui/1") is None
    await box.delete([1])
    assert await box.append("t", {}, producer_id="ui/1") is None, "remembered after delivery too"
    assert box.duplicates == 2
    await box.close()


async def test_epoch_increments_durably(tmp_path: Path):
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9)
    assert [await box.next_epoch() for _ in range(3)] == [1, 2, 3]
    await box.close()
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9)
    assert box.epoch == 3 and await box.next_epoch() == 4
    await box.close()


async def test_quota_drops_telemetry_first_then_oldest_events_with_gap_events(tmp_path: Path):
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=20_000)
    for _ in range(20):
        await box.store_telemetry(b'{"cpu": 1}' + b" " * 400)
    for i in range(40):
        await box.append("keep", {"i": i, "pad": "x" * 300})
    assert box.dropped_telemetry > 0 and box.dropped_events == 0
    for i in range(100):
        await box.append("flood", {"i": i, "pad": "x" * 300})
    assert box.dropped_events > 0 and box.stored_bytes <= 20_000 + 2_000
    events = await box.batch_after(0, 10_000)
    gaps = [json.loads(e.data) for e in events if e.type == "gap"]
    # Every drop is accounted for by the surviving gap events (earlier gaps are folded into later ones).
    assert sum(g["telemetry_dropped"] for g in gaps) == box.dropped_telemetry
    # (a dropped gap event counts as a dropped event itself, and its own counts move to the new gap)
    assert sum(g["events_dropped"] for g in gaps) == box.dropped_events
    assert any(g["kind"] == "event" and g.get("earlier_gaps") for g in gaps), "earlier gaps were folded"
    # Reconciliation by seq: every seq that is gone lies in a range of a surviving gap event, and
    # every range is ordered and disjoint (folded gaps keep their ranges).
    kept = {e.seq for e in events}
    covered = {s for g in gaps if g["kind"] == "event" for a, b in g["ranges"] for s in range(a, b + 1)}
    assert set(range(1, max(kept) + 1)) - kept <= covered
    assert not covered & kept
    for g in gaps:
        if g["kind"] == "event":
            rs = g["ranges"]
            assert all(a <= b for a, b in rs) and all(rs[i][1] < rs[i + 1][0] for i in range(len(rs) - 1))
    survivors = [json.loads(e.data)["i"] for e in events if e.type == "flood"]
    assert survivors == sorted(survivors) and survivors[-1] == 99, "the newest events are kept"
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    await box.close()


async def test_group_commit_many_concurrent_appends(tmp_path: Path):
    import asyncio

    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9)
    seqs = await asyncio.gather(*(box.append("t", {"i": i}, producer_id=f"p/{i}") for i in range(2000)))
    assert sorted(seqs) == list(range(1, 2001))
    batch = await box.batch_after(0, 5000)
    assert [json.loads(e.data)["i"] for e in batch] == list(range(2000)), "stored in arrival order"
    await box.close()


def test_acknowledged_appends_survive_kill9(tmp_path: Path):
    """A writer prints each seq after append() returns; SIGKILL it; every printed seq must be there."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from appliance.outbox import Outbox
        async def main():
            box = await Outbox.open(Path({str(tmp_path / "o.db")!r}), quota_bytes=10**9)
            i = 0
            while True:
                seqs = await asyncio.gather(*(box.append("t", {{"i": i + k}}) for k in range(20)))
                i += 20
                print(max(seqs), flush=True)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        acked = int(line)
        if acked >= 2000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    import asyncio

    async def check() -> int:
        box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9)
        rows = await box.batch_after(0, 10**6)
        await box.close()
        return len(rows)

    assert asyncio.run(check()) >= acked


async def test_an_event_remembers_the_boot_that_stored_it(tmp_path: Path):
    """ts.mono only means something with the boot it was read in: an event stored before a reboot
    and sent after it names the boot that stored it, not the one sending it."""
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9, boot_id="boot-before")
    await box.append("test.boot", {"n": 1})
    await box.close()
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9, boot_id="boot-after")
    await box.append("test.boot", {"n": 2})
    before, after = await box.batch_after(0, 10)
    assert json.loads(before.message("boot-after"))["ts"]["boot_id"] == "boot-before"
    assert json.loads(after.message("boot-after"))["ts"]["boot_id"] == "boot-after"
    await box.close()


async def test_an_outbox_from_before_the_boot_column_is_migrated(tmp_path: Path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "o.db")
    db.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, epoch INTEGER NOT NULL, wall REAL NOT NULL,"
        " mono REAL NOT NULL, synced INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, size INTEGER NOT NULL);"
        "INSERT INTO events(epoch, wall, mono, synced, type, data, size) VALUES (3, 1.0, 2.0, 1, 'old.event', '{}', 2);"
    )
    db.commit()
    db.close()
    box = await Outbox.open(tmp_path / "o.db", quota_bytes=10**9, boot_id="now")
    (old,) = await box.batch_after(0, 10)
    assert old.type == "old.event" and json.loads(old.message("now"))["ts"]["boot_id"] == "now"
    await box.close()


def test_gap_ranges_merge_and_stay_bounded():
    from appliance.outbox import merge_ranges

    assert merge_ranges([[5, 9], [1, 3], [4, 4], [20, 30], [25, 26]]) == [[1, 9], [20, 30]]
    many = [[i * 10, i * 10 + 1] for i in range(100)]
    merged = merge_ranges(many, limit=8)
    assert len(merged) == 8 and merged[0][0] == 0 and merged[-1][1] == 991
    covered = {s for a, b in merged for s in range(a, b + 1)}
    assert all(s in covered for a, b in many for s in range(a, b + 1)), "joining never loses a seq"
