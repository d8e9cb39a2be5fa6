"""The durable outbox: every event the kiosk produced, kept until the central broker's PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a committed transaction survives ``kill -9`` and a power
cut. ``seq`` is an ``AUTOINCREMENT`` key, so it is 64-bit, assigned in the same transaction that stores
the event, and never reused even after rows are deleted (SQLite keeps the high-water mark in
``sqlite_sequence``). Producers' ids are remembered (``seen``) so a redelivered event is stored once.

All SQLite work runs on one dedicated thread; appends are group-committed (one fsync for everything
that arrived within a few milliseconds), which is what makes thousands of durable events per second
possible on an SD card.

Quota policy (explicit and reported): when the stored bytes exceed the quota, the oldest stored
telemetry goes first; if events alone exceed it, the oldest events go. Every drop is recorded as a
``gap`` event saying what was dropped (kind, seq range, count) and why.

A full filesystem (not just a full quota): SQLite needs free space even to delete rows in WAL mode, so
the outbox keeps a **reserve file** of ``reserve_bytes`` beside the database. The first write that
fails with "disk full" releases it, marks the outbox ``full`` and is retried; the same policy then
makes room for new events. Every SQLite error is translated to ``StorageError`` here, never seen raw.
``check_space()`` (called every few seconds by the daemon) recreates the reserve and clears ``full``
once the filesystem has room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiosk_core.errors import OutboxFull, StorageError
from kiosk_core.tasks import wait_for

log = logging.getLogger("kiosk.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch INTEGER NOT NULL,
    wall REAL NOT NULL,
    mono REAL NOT NULL,
    synced INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    size INTEGER NOT NULL,
    boot TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS seen (producer_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, wall REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_wall ON seen(wall);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, reply BLOB, wall REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wall REAL NOT NULL,
    payload TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""

# How long producers' ids are remembered for de-duplication.
SEEN_RETENTION_S = 7 * 86400
GROUP_COMMIT_MAX = 1000
GROUP_COMMIT_FULL = 64
# A gap event lists at most this many seq ranges (older gaps folded into it bring theirs).
MAX_GAP_RANGES = 64
RESERVE_BYTES = 4 << 20
# The reserve is recreated only with this much room to spare beyond it, so it does not flap.
RESUME_MARGIN_BYTES = 1 << 20
# How much of its file the WAL keeps after a checkpoint (see the journal_size_limit pragma).
WAL_KEEP_BYTES = 4 << 20
# Below this much free space the outbox behaves as on a full disk before a write fails (watermark).
LOW_WATER_BYTES = 512 << 10
# On a full disk the outbox grows by at most this share of the space it can count on (the reserve it
# released, or what is left under the low-water mark); beyond that new rows replace the oldest (SQLite
# reuses the freed pages), so the rest stays free for the WAL, and deleting always has room.
FULL_GROWTH_SHARE = 0.25
# ... but it always keeps room for the newest few events (a little growth the reserve easily covers).
FULL_MIN_CAP_BYTES = 64 << 10
# On a full disk producer ids older than this are forgotten (their table must not grow either); a
# producer re-sends only within minutes, while it waits for its stored reply.
FULL_SEEN_RETENTION_S = 3600


def _gap_ranges(gap: dict[str, Any]) -> list[list[int]]:
    """The seq ranges an (older) gap event accounts for."""
    if isinstance(gap.get("ranges"), list):
        return [[int(a), int(b)] for a, b in gap["ranges"]]
    if gap.get("kind") == "event":
        return [[int(gap["from_seq"]), int(gap["to_seq"])]]
    return []


def merge_ranges(ranges: list[list[int]], limit: int = MAX_GAP_RANGES) -> list[list[int]]:
    """Sorted, overlapping and adjacent ranges merged; beyond ``limit`` the closest neighbours are
    joined (a consumer that received a seq inside a range knows it was delivered, not dropped)."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    while len(out) > limit:
        i = min(range(len(out) - 1), key=lambda k: out[k + 1][0] - out[k][1])
        out[i : i + 2] = [[out[i][0], out[i + 1][1]]]
    return out


def _disk_full(exc: BaseException) -> bool:
    return "full" in str(exc).lower() or getattr(exc, "errno", None) == 28  # SQLITE_FULL / ENOSPC


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    epoch: int
    wall: float
    mono: float
    synced: bool
    type: str
    data: str  # JSON text, already validated
    boot: str = ""  # the boot that stored it ('' for rows stored before the column existed)

    def message(self, sender_boot: str) -> bytes:
        """The fleet ``event`` payload (see docs/mqtt.md). ``ts.boot_id`` is the boot whose monotonic
        clock ``ts.mono`` is: the one that stored the event (older rows: the sender's)."""
        # Formatted by hand: this runs for every event sent, and data is stored as JSON text already.
        synced = "true" if self.synced else "false"
        boot_id = self.boot or sender_boot
        return (
            f'{{"epoch":{self.epoch},"seq":{self.seq},"ts":{{"wall":{self.wall:.3f},"mono":{self.mono:.3f},'
            f'"boot_id":"{boot_id}","time_synced":{synced}}},"type":{json.dumps(self.type)},"data":{self.data}}}'
        ).encode()


@dataclass
class _Pending:
    type: str
    data: str
    producer_id: str | None
    wall: float
    mono: float
    synced: bool
    future: asyncio.Future[int | None]


class Outbox:
    """Durable, ordered, de-duplicated event store. Create with ``await Outbox.open(...)``."""

    def __init__(
        self,
        path: Path,
        *,
        quota_bytes: int,
        clock_synced: Any = lambda: False,
        boot_id: str = "",
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        self.path = path
        self.boot_id = boot_id
        self.reserve_path = path.with_name(path.name + ".reserve")
        self.epoch_path = path.with_name(path.name + ".epoch")
        self.reserve_bytes = reserve_bytes
        #: the filesystem under the outbox ran out of space (or is below the low-water mark)
        self.full = False
        #: while ``full``: the bytes the outbox may hold (it must not grow), else None
        self.full_cap: int | None = None
        self._seen_pruned = 0.0
        self.quota_bytes = quota_bytes
        self._clock_synced = clock_synced
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._flush_lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set when events are stored (and by the drain on PUBACKs)
        self.epoch = 0
        self.stored_bytes = 0
        self.depth = 0
        self.telemetry_depth = 0
        self.dropped_events = 0
        self.dropped_telemetry = 0
        self.duplicates = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_ident: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        quota_bytes: int,
        clock_synced: Any = lambda: False,
        boot_id: str = "",
        reserve_bytes: int = RESERVE_BYTES,
    ) -> Outbox:
        box = cls(
            path,
            quota_bytes=quota_bytes,
            clock_synced=clock_synced,
            boot_id=boot_id,
            reserve_bytes=reserve_bytes,
        )
        box._loop = asyncio.get_running_loop()
        await box._run(box._open_sync)
        return box

    def _open_sync(self) -> None:
        self._thread_ident = threading.get_ident()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            # The WAL keeps (and reuses) up to this much of its file after a checkpoint instead of
            # being cut to nothing: writing after a checkpoint then needs no new space, which matters
            # most when the disk is full.
            db.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
            if "boot" not in columns:  # an outbox from before events remembered their boot
                db.execute("ALTER TABLE events ADD COLUMN boot TEXT NOT NULL DEFAULT ''")
            row = db.execute("PRAGMA integrity_check(1)").fetchone()
            if row[0] != "ok":
                raise StorageError(f"outbox {self.path} failed its integrity check: {row[0]}")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the outbox {self.path}: {exc}") from exc
        self._db = db
        self.epoch = max(self._meta("epoch"), self._read_epoch_file())
        self._recount()
        try:
            db.execute("DELETE FROM seen WHERE wall < ?", (time.time() - SEEN_RETENTION_S,))
        except sqlite3.OperationalError as exc:  # a full disk at start: the daemon must still come up
            log.warning("outbox: old producer ids not pruned: %s", exc)
        if not self._make_reserve():
            log.error("outbox: no room for the space reserve under %s", self.path.parent)
            self._enter_full("full at start")

    def _recount(self) -> None:
        """Re-derive the cached sizes from the database (after open or a failed transaction)."""
        assert self._db is not None
        db = self._db
        self.stored_bytes = (
            db.execute("SELECT COALESCE(SUM(size),0) FROM events").fetchone()[0]
            + db.execute("SELECT COALESCE(SUM(size),0) FROM telemetry").fetchone()[0]
        )
        self.depth = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        self.telemetry_depth = db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]

    async def close(self) -> None:
        await self.flush()
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._pool, self._guarded, fn, *args)

    def _guarded(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` on the outbox thread. A full disk releases the reserve and retries once; every
        SQLite error leaves as ``StorageError``."""
        for attempt in (1, 2):
            try:
                return fn(*args)
            except sqlite3.Error as exc:
                if self._db is not None:
                    if self._db.in_transaction:
                        try:
                            self._db.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    # Always: SQLite may already have rolled back by itself (SQLITE_FULL at COMMIT),
                    # and the cached counts still hold what the failed transaction had changed.
                    with contextlib.suppress(sqlite3.Error):
                        self._recount()
                if attempt == 1 and _disk_full(exc) and self._release_reserve():
                    continue
                raise StorageError(f"outbox {self.path.name}: {exc}") from exc
        raise AssertionError("unreachable")

    # --- the space reserve -------------------------------------------------------------------------

    def _make_reserve(self) -> bool:
        """Create the reserve file if it is missing and the filesystem has room; True if it exists."""
        if self.reserve_bytes <= 0:
            return True
        try:
            if self.reserve_path.exists() and self.reserve_path.stat().st_size >= self.reserve_bytes:
                return True
            st = os.statvfs(self.reserve_path.parent)
            if st.f_bavail * st.f_frsize < self.reserve_bytes + RESUME_MARGIN_BYTES:
                return False
            fd = os.open(self.reserve_path, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError as exc:
            log.warning("outbox: cannot create the space reserve %s: %s", self.reserve_path, exc)
            self.reserve_path.unlink(missing_ok=True)
            return False

    def _enter_full(self, why: str, room: int = 0) -> None:
        """From now on the outbox does not grow: new rows replace the oldest (the drop policy)."""
        if not self.full:
            log.error(
                "outbox: the filesystem under %s is %s; stored telemetry and then the oldest events "
                "are dropped (with gap events) to make room for new ones until space is freed "
                "(%d KiB free, the outbox holds %d KiB)",
                self.path.parent,
                why,
                self.free_bytes() >> 10,
                self.stored_bytes >> 10,
            )
        self.full = True
        if self.full_cap is None:
            # Pages the database file already owns but does not use take new rows without growing it.
            self.full_cap = max(
                FULL_MIN_CAP_BYTES,
                self.stored_bytes + self._free_pages_bytes() // 2 + int(room * FULL_GROWTH_SHARE),
            )

    def _rewind_wal_if_full(self) -> None:
        """On a full disk, checkpoint after every commit: the next transaction then writes the WAL
        from its start again, into space the file already has, instead of growing it."""
        if self.full and self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.debug("outbox: checkpoint on a full disk failed: %s", exc)

    def _free_pages_bytes(self) -> int:
        if self._db is None:
            return 0
        try:
            pages = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            return int(pages) * int(self._db.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error:
            return 0

    def _leave_full(self) -> None:
        self.full = False
        self.full_cap = None

    @property
    def cap_bytes(self) -> int:
        """What the outbox may hold now: the quota, or less while the disk is full."""
        return self.quota_bytes if self.full_cap is None else min(self.quota_bytes, self.full_cap)

    def _release_reserve(self) -> bool:
        """Give the reserve back to the filesystem (so SQLite can delete and write); False if there
        was none left."""
        self._enter_full("full; using the space reserve", room=self.reserve_bytes)
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("outbox: cannot release the space reserve: %s", exc)
            return False
        return True

    def free_bytes(self) -> int:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    async def check_space(self) -> bool:
        """Recreate the reserve once there is room again; returns ``full`` afterwards."""

        def check() -> bool:
            if self._db is not None:
                # Rewinds the WAL (kept up to WAL_KEEP_BYTES) so the next writes reuse its space.
                try:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass
            reserve = self._make_reserve()
            free = self.free_bytes()
            if not self.full and free < LOW_WATER_BYTES:
                self._enter_full(f"below {LOW_WATER_BYTES >> 10} KiB free", room=free)
            elif self.full and reserve and free >= RESUME_MARGIN_BYTES:
                self._leave_full()
                log.warning(
                    "outbox: space under %s is back (%d KiB free); the reserve is restored",
                    self.path.parent,
                    free >> 10,
                )
            return self.full

        assert self._loop is not None
        return await self._loop.run_in_executor(self._pool, check)

    def _meta(self, key: str) -> int:
        assert self._db is not None
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    # --- epoch -------------------------------------------------------------------------------------
    # The epoch lives in a small file of its own, overwritten in place (pwrite + fsync of blocks it
    # already owns): incrementing it needs no free space, so a device on a full disk still connects
    # with a new epoch. (Outboxes from before keep it in the meta table; the larger of the two wins.)

    _EPOCH_WIDTH = 20

    def _read_epoch_file(self) -> int:
        try:
            text = self.epoch_path.read_bytes()[: self._EPOCH_WIDTH].strip()
            return int(text) if text else 0
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise StorageError(f"the epoch file {self.epoch_path} is unreadable: {exc}") from exc

    def _write_epoch_file(self, value: int) -> None:
        fd = os.open(self.epoch_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, str(value).rjust(self._EPOCH_WIDTH).encode() + b"\n", 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def next_epoch(self) -> int:
        """Increment and durably store the connection epoch (called before every CONNECT)."""

        def bump() -> int:
            value = max(self.epoch, self._read_epoch_file()) + 1
            try:
                self._write_epoch_file(value)
            except OSError as exc:
                raise StorageError(f"cannot store the epoch in {self.epoch_path}: {exc}") from exc
            return value

        self.epoch = await self._run(bump)
        return self.epoch

    # --- appending ---------------------------------------------------------------------------------

    async def append(
        self, type: str, data: dict[str, Any] | str, *, producer_id: str | None = None
    ) -> int | None:
        """Store one event durably; returns its seq, or None if ``producer_id`` was stored before.

        Returns only after the transaction holding it is committed (fsynced).
        """
        assert self._loop is not None
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        fut: asyncio.Future[int | None] = self._loop.create_future()
        self._pending.append(
            _Pending(type, text, producer_id, time.time(), time.monotonic(), bool(self._clock_synced()), fut)
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.create_task(self._flush_soon())
        return await fut

    async def _flush_soon(self) -> None:
        # One flusher at a time: appends that arrive while a transaction commits join the next one,
        # taken by this same task (flush() loops until nothing is pending), instead of each queuing a
        # task of its own behind the lock.
        await asyncio.sleep(0)  # let everything ready on the loop this instant join the first batch
        try:
            await self.flush()
        finally:
            self._flush_scheduled = False
            if self._pending:
                self._flush_scheduled = True
                asyncio.get_running_loop().create_task(self._flush_soon())

    async def flush(self) -> None:
        async with self._flush_lock:
            while self._pending:
                # On a full disk smaller transactions: each must fit in the WAL space already there.
                n = GROUP_COMMIT_FULL if self.full else GROUP_COMMIT_MAX
                batch, self._pending = self._pending[:n], self._pending[n:]
                try:
                    seqs = await self._run(self._append_sync, batch)
                except Exception as exc:  # noqa: BLE001 - each producer gets the typed error
                    err = (
                        exc if isinstance(exc, StorageError) else StorageError(f"outbox write failed: {exc}")
                    )
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(err)
                    continue
                for p, seq in zip(batch, seqs, strict=True):
                    if not p.future.done():
                        p.future.set_result(seq)
                self.changed.set()

    def _append_sync(self, batch: list[_Pending]) -> list[int | None]:
        assert self._db is not None
        db = self._db
        for attempt in range(4):
            try:
                out = self._append_tx(db, batch)
                self._rewind_wal_if_full()
                return out
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._recount()
                if not _disk_full(exc) or attempt == 3:
                    raise StorageError(f"outbox write failed: {exc}") from exc
                # The filesystem is full: first the reserve gives SQLite room to work, then the drop
                # policy makes room for the new events (deleting needs that room too).
                if self._release_reserve():
                    continue
                if not self._drop_oldest(db, max(self.stored_bytes // 10, 1), reason="disk full"):
                    raise OutboxFull("disk full and nothing left to drop in the outbox") from exc
        raise AssertionError("unreachable")

    def _append_tx(self, db: sqlite3.Connection, batch: list[_Pending]) -> list[int | None]:
        out: list[int | None] = []
        epoch = self.epoch
        added = 0
        db.execute("BEGIN IMMEDIATE")
        for p in batch:
            if p.producer_id is not None:
                row = db.execute("SELECT seq FROM seen WHERE producer_id=?", (p.producer_id,)).fetchone()
                if row is not None:
                    self.duplicates += 1
                    out.append(None)
                    continue
            size = len(p.data) + len(p.type) + 64
            cur = db.execute(
                "INSERT INTO events(epoch, wall, mono, synced, type, data, size, boot) VALUES (?,?,?,?,?,?,?,?)",
                (epoch, p.wall, p.mono, int(p.synced), p.type, p.data, size, self.boot_id),
            )
            seq = int(cur.lastrowid or 0)
            if p.producer_id is not None:
                db.execute(
                    "INSERT INTO seen(producer_id, seq, wall) VALUES (?,?,?)", (p.producer_id, seq, p.wall)
                )
            added += size
            out.append(seq)
        self.stored_bytes += added
        self.depth += sum(1 for s in out if s is not None)
        self._keep_within_cap(db)
        db.execute("COMMIT")
        return out

    def _keep_within_cap(self, db: sqlite3.Connection) -> None:
        """In a transaction: drop by the policy until the outbox is within its quota, or on a full
        disk within what it held when the disk filled up."""
        cap = self.cap_bytes
        if self.stored_bytes > cap:
            reason = "outbox quota" if cap == self.quota_bytes else "disk full"
            self._drop_oldest(db, self.stored_bytes - cap, reason=reason, in_tx=True)
        if self.full and time.monotonic() - self._seen_pruned > 60:
            self._seen_pruned = time.monotonic()
            db.execute("DELETE FROM seen WHERE wall < ?", (time.time() - FULL_SEEN_RETENTION_S,))

    def _drop_oldest(self, db: sqlite3.Connection, need: int, *, reason: str, in_tx: bool = False) -> bool:
        """Free at least ``need`` bytes: telemetry first, then the oldest events; record a gap event."""
        if not in_tx:
            db.execute("BEGIN IMMEDIATE")
        # Drop at least 5% of what it may hold at once, so a full outbox does not write a gap event per
        # event.
        need = max(need, self.cap_bytes // 20)
        freed = 0
        t_dropped = 0
        dropped_any = False
        rows = db.execute("SELECT id, size FROM telemetry ORDER BY id").fetchall()
        t_ids: list[int] = []
        for tid, size in rows:
            if freed >= need:
                break
            t_ids.append(tid)
            freed += size
        if t_ids:
            db.execute(f"DELETE FROM telemetry WHERE id <= {t_ids[-1]}")
            self.telemetry_depth -= len(t_ids)
            self.dropped_telemetry += len(t_ids)
            dropped_any = True
            t_dropped = len(t_ids)
        if freed < need:
            # Events go oldest first. Gap events among them are folded into the new gap event, so the
            # record of earlier drops is never itself lost.
            seqs: list[int] = []
            earlier = {"telemetry": 0, "event": 0}
            ranges: list[list[int]] = []  # the seq ranges of the gap events folded in
            for seq, size, etype, data in db.execute("SELECT seq, size, type, data FROM events ORDER BY seq"):
                if freed >= need:
                    break
                seqs.append(seq)
                freed += size
                if etype == "gap":
                    try:
                        old = json.loads(data)
                        earlier["telemetry"] += int(old.get("telemetry_dropped", 0))
                        earlier["event"] += int(old.get("events_dropped", 0))
                        ranges += _gap_ranges(old)
                    except (ValueError, TypeError, AttributeError):
                        pass
            if seqs:
                db.execute("DELETE FROM events WHERE seq <= ?", (seqs[-1],))
                self.depth -= len(seqs)
                self.dropped_events += len(seqs)
                dropped_any = True
                gap = {
                    "kind": "event",
                    "from_seq": seqs[0],
                    "to_seq": seqs[-1],
                    "count": len(seqs),
                    "reason": reason,
                    # every seq range this gap and the gaps folded into it account for
                    "ranges": merge_ranges([*ranges, [seqs[0], seqs[-1]]]),
                }
                if any(earlier.values()):
                    gap["earlier_gaps"] = earlier
                t_dropped += earlier["telemetry"]
                self._gap(
                    db, gap | {"telemetry_dropped": t_dropped, "events_dropped": len(seqs) + earlier["event"]}
                )
                t_dropped = 0
        if t_dropped:
            self._gap(
                db,
                {
                    "kind": "telemetry",
                    "count": t_dropped,
                    "reason": reason,
                    "telemetry_dropped": t_dropped,
                    "events_dropped": 0,
                },
            )
        self.stored_bytes -= freed
        if not in_tx:
            db.execute("COMMIT")
        if dropped_any:
            log.warning("outbox: dropped %d bytes (%s); a gap event records it", freed, reason)
        return dropped_any

    def _gap(self, db: sqlite3.Connection, data: dict[str, Any]) -> None:
        text = json.dumps(data, separators=(",", ":"))
        size = len(text) + 64
        db.execute(
            "INSERT INTO events(epoch, wall, mono, synced, type, data, size, boot) VALUES (?,?,?,?,?,?,?,?)",
            (
                self.epoch,
                time.time(),
                time.monotonic(),
                int(bool(self._clock_synced())),
                "gap",
                text,
                size,
                self.boot_id,
            ),
        )
        self.stored_bytes += size
        self.depth += 1

    # --- telemetry ---------------------------------------------------------------------------------

    async def store_telemetry(self, payload: bytes) -> None:
        """Keep a telemetry sample that could not be sent; dropped first under quota."""

        def put() -> None:
            assert self._db is not None
            size = len(payload) + 32
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO telemetry(wall, payload, size) VALUES (?,?,?)",
                (time.time(), payload.decode(), size),
            )
            self.stored_bytes += size
            self.telemetry_depth += 1
            self._keep_within_cap(self._db)
            self._db.execute("COMMIT")
            self._rewind_wal_if_full()

        await self._run(put)
        self.changed.set()

    async def telemetry_batch(self, limit: int) -> list[tuple[int, bytes]]:
        def get() -> list[tuple[int, bytes]]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT id, payload FROM telemetry ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            return [(r[0], r[1].encode()) for r in rows]

        return await self._run(get)

    async def delete_telemetry(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return

        def delete() -> None:
            assert self._db is not None
            self._db.execute("BEGIN IMMEDIATE")
            q = ",".join("?" * len(ids))
            freed = self._db.execute(
                f"SELECT COALESCE(SUM(size),0), COUNT(*) FROM telemetry WHERE id IN ({q})", ids
            ).fetchone()
            self._db.execute(f"DELETE FROM telemetry WHERE id IN ({q})", ids)
            self._db.execute("COMMIT")
            self.stored_bytes -= freed[0]
            self.telemetry_depth -= freed[1]

        await self._run(delete)

    # --- draining ----------------------------------------------------------------------------------

    async def batch_after(self, seq: int, limit: int) -> list[StoredEvent]:
        """Events with a seq greater than ``seq``, oldest first."""

        def get() -> list[StoredEvent]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT seq, epoch, wall, mono, synced, type, data, boot FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
            return [StoredEvent(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows]

        return await self._run(get)

    async def delete(self, seqs: Iterable[int]) -> None:
        """Forget events the central broker acknowledged."""
        seqs = sorted(seqs)
        if not seqs:
            return

        def delete() -> None:
            assert self._db is not None
            self._db.execute("BEGIN IMMEDIATE")
            freed, count = 0, 0
            for i in range(0, len(seqs), 500):
                chunk = seqs[i : i + 500]
                q = ",".join("?" * len(chunk))
                row = self._db.execute(
                    f"SELECT COALESCE(SUM(size),0), COUNT(*) FROM events WHERE seq IN ({q})", chunk
                ).fetchone()
                self._db.execute(f"DELETE FROM events WHERE seq IN ({q})", chunk)
                freed += row[0]
                count += row[1]
            self._db.execute("COMMIT")
            self.stored_bytes -= freed
            self.depth -= count

        await self._run(delete)

    async def oldest_age_s(self) -> float | None:
        def get() -> float | None:
            assert self._db is not None
            row = self._db.execute("SELECT MIN(wall) FROM events").fetchone()
            return None if row[0] is None else max(0.0, time.time() - row[0])

        return await self._run(get)

    async def wait_new(self, timeout_s: float) -> None:
        try:
            await wait_for(self.changed.wait(), timeout_s)
        except TimeoutError:
            pass
        self.changed.clear()

    # --- commands (at-most-once store) -------------------------------------------------------------
    # Kept in the same database so one fsync policy covers everything the fleet contract promises.

    async def command_lookup(self, cid: str) -> tuple[str, bytes | None] | None:
        def get() -> tuple[str, bytes | None] | None:
            assert self._db is not None
            row = self._db.execute("SELECT state, reply FROM commands WHERE id=?", (cid,)).fetchone()
            return None if row is None else (row[0], row[1])

        return await self._run(get)

    async def command_begin(self, cid: str, name: str) -> None:
        await self._run(self._command_put, cid, name, "running", None)

    async def command_finish(self, cid: str, name: str, reply: bytes) -> None:
        await self._run(self._command_put, cid, name, "done", reply)

    def _command_put(self, cid: str, name: str, state: str, reply: bytes | None) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT OR REPLACE INTO commands(id, name, state, reply, wall) VALUES (?,?,?,?,?)",
            (cid, name, state, reply, time.time()),
        )

    async def command_prune(self, older_than_s: float) -> int:
        def prune() -> int:
            assert self._db is not None
            return self._db.execute(
                "DELETE FROM commands WHERE wall < ?", (time.time() - older_than_s,)
            ).rowcount

        return await self._run(prune)
