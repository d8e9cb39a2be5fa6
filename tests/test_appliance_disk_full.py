"""A full filesystem under data_dir, on a real (tmpfs) filesystem the test mounts.

"Fill the kiosk's data partition to the last byte. The kiosk stays online, answers commands, keeps
taking events by the documented drop policy, says `storage` is degraded with what to do, and is back
to normal within 10 s of the space returning."
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tmpfs, write_config
from fleet_helpers import (
    ApplianceProcess,
    Platform,
    platform_away,
    produce,
    produce_stored,
    wait_appliance_ready,
)

from sim.mosquitto import Mosquitto

FS_BYTES = 24 << 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "data", FS_BYTES) as mount:
        yield mount


RESERVE = 2 << 20  # reserve_mb = 2 in the test's config


def small_fs_config(tmp_path: Path, fs: Path, bus: Mosquitto, central: Mosquitto) -> Path:
    """The kiosk's config with its data_dir on ``fs``, a 2 MB reserve and telemetry every second."""
    return write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus.port,
        fleet_port=central.port,
        data_dir=fs,
        telemetry_interval_s=1,
        extra="reserve_mb = 2\n",
    )


SLACK = 256 << 10  # what the block-by-block top-up may take at most


def fill(fs: Path) -> Path:
    """Take every free byte of ``fs``, as a runaway log or recording would: it keeps taking what comes
    free (the kiosk's own checkpoints give space back too) until nothing is left.

    It stops taking once the kiosk has released its reserve: that space is the kiosk's, and a filler
    swallowing it too would leave the kiosk nothing (it would then rightly answer 503); the top-up
    after the last fallocate is bounded well below the reserve for the same reason."""
    filler = fs / "filler"
    reserve = fs / "outbox.sqlite3.reserve"
    had_reserve = reserve.exists()
    with open(filler, "ab", buffering=0) as f:
        for _ in range(50):
            if had_reserve and not reserve.exists():
                break
            st = os.statvfs(fs)
            free = st.f_bavail * st.f_frsize
            if free <= SLACK:
                break
            try:  # the kiosk writes meanwhile: a fallocate asking a byte too much gets nothing
                os.posix_fallocate(f.fileno(), os.fstat(f.fileno()).st_size, free)
            except OSError:
                continue
        topped = 0
        try:  # whatever fallocate left: fill it block by block
            while topped < SLACK and not (had_reserve and not reserve.exists()):
                topped += f.write(b"\0" * 65536)
        except OSError:
            pass
    st = os.statvfs(fs)
    assert st.f_bavail * st.f_frsize <= RESERVE + SLACK, "the filesystem is full but for the kiosk's reserve"
    return filler


async def recovers(platform: Platform, filler: Path) -> None:
    """Free the space; the kiosk must say so within 10 s (storage.recovered)."""
    recovered = len(platform.events("storage.recovered"))
    filler.unlink()
    t0 = time.monotonic()
    await platform.wait_for(
        lambda: len(platform.events("storage.recovered")) > recovered, timeout_s=10, what="storage.recovered"
    )
    assert time.monotonic() - t0 < 10


@pytest.mark.timeout(120)
async def test_a_full_data_partition_keeps_the_kiosk_online_and_it_recovers_by_itself(
    tmp_path: Path, small_fs: Path, bus_broker: Mosquitto, central_broker: Mosquitto
):
    cfg = small_fs_config(tmp_path, small_fs, bus_broker, central_broker)
    platform = await Platform(central_broker.port).start()
    app = ApplianceProcess(cfg, tmp_path / "a.log").start()
    filler: Path | None = None
    try:
        await wait_appliance_ready(bus_broker.port)
        await platform.wait_for(lambda: platform.of("state"), what="online")
        assert (small_fs / "outbox.sqlite3.reserve").exists()

        filler = fill(small_fs)
        # Commands are answered, events keep flowing (stored, sent, acknowledged), health says why.
        assert (await platform.command("ping", {"id": "full-1"}))["status"] == 200
        await produce(
            bus_broker.port, [{"type": "test.full", "data": {"n": i}, "id": f"f{i}"} for i in range(300)]
        )
        await platform.wait_for(
            lambda: len(platform.unique_events("test.full")) == 300,
            timeout_s=30,
            what="events on a full disk",
        )
        status = await platform.command("get_status", {"id": "full-2"})
        assert status["status"] == 200 and status["health"]["storage"]["status"] == "degraded", status
        assert "full" in status["health"]["storage"]["reason"]
        await platform.wait_for(lambda: platform.events("storage.full"), timeout_s=10, what="storage.full")

        # A central outage while the disk is full: the new connection's epoch is still stored.
        epoch = platform.of("state")[-1]["epoch"]
        central_broker.kill()
        central_broker.start()
        await platform.start()
        await platform.wait_for(
            lambda: any(s["state"] == "online" and s["epoch"] > epoch for s in platform.of("state")),
            timeout_s=20,
            what="online again with a new epoch on the full disk",
        )
        # And a restart of the appliance itself on the full disk comes up and answers.
        app.kill9()
        app = ApplianceProcess(cfg, tmp_path / "a2.log").start()
        epoch = platform.of("state")[-1]["epoch"]
        await platform.wait_for(
            lambda: any(s["state"] == "online" and s["epoch"] > epoch for s in platform.of("state")),
            timeout_s=20,
            what="online after a restart on the full disk",
        )
        reply = await platform.command("ping", {"id": "full-after-restart"})
        assert reply["status"] in (200, 503), reply  # 503 only with the reason: nothing left to record it
        assert reply["status"] == 200 or "cannot record" in reply["error"]
        await platform.wait_for(
            lambda: len(platform.events("storage.full")) >= 2, timeout_s=10, what="storage.full after restart"
        )

        # Space comes back, and the disk fills up once more while events flow: each turn is reported.
        await recovers(platform, filler)
        filler = fill(small_fs)
        n_full = len(platform.events("storage.full"))
        await produce(
            bus_broker.port, [{"type": "test.full2", "data": {"n": i}, "id": f"g{i}"} for i in range(100)]
        )
        await platform.wait_for(
            lambda: len(platform.unique_events("test.full2")) == 100, timeout_s=30, what="events, full again"
        )
        await platform.wait_for(
            lambda: len(platform.events("storage.full")) > n_full, timeout_s=10, what="storage.full again"
        )

        # Space returns: within 10 s the reserve is back, storage ok, and the platform is told.
        await recovers(platform, filler)
        filler = None
        status = await platform.command("get_status", {"id": "full-3"})
        assert status["health"]["storage"]["status"] == "ok"
        assert (small_fs / "outbox.sqlite3.reserve").exists()
        assert app.alive
        seqs = [e["seq"] for e in platform.unique_events()]
        assert seqs == sorted(seqs), "events stayed in order"
    finally:
        if filler is not None:
            filler.unlink(missing_ok=True)
        app.terminate()
        await platform.stop()


@pytest.mark.timeout(180)
async def test_a_disk_that_stays_full_while_the_platform_is_away_keeps_the_newest_events(
    tmp_path: Path, small_fs: Path, bus_broker: Mosquitto, central_broker: Mosquitto
):
    """Full disk and no platform: more events arrive than the reserve could ever hold. The outbox must
    not grow into the space its reserve gave back: new events replace the oldest by the drop policy,
    every producer still gets its stored reply, and the drops are reported as gaps."""
    cfg = small_fs_config(tmp_path, small_fs, bus_broker, central_broker)
    away = await platform_away(central_broker)
    app = ApplianceProcess(cfg, tmp_path / "a.log").start()
    filler: Path | None = None
    try:
        await wait_appliance_ready(bus_broker.port)
        filler = fill(small_fs)
        n, pad = 3000, "x" * 1000  # 3 MB of events against a 2 MB reserve
        await produce_stored(
            bus_broker.port,
            [{"type": "test.stuck", "data": {"n": i, "pad": pad}, "id": f"s{i}"} for i in range(n)],
        )
        assert app.alive
        central_broker.start()
        platform = await away.again().start()
        try:
            await platform.wait_for(
                lambda: any(e["data"]["n"] == n - 1 for e in platform.events("test.stuck")),
                timeout_s=60,
                what="the newest event",
            )
            # (storage.full itself is one of the oldest events by now: dropped like them, and the
            # gaps say why.) Health says it, and what to do.
            status = await platform.command("get_status", {"id": "stuck-0"})
            assert status["health"]["storage"]["status"] == "degraded", status
            kept = sorted(e["data"]["n"] for e in platform.unique_events("test.stuck"))
            assert kept == list(range(n - len(kept), n)), "the oldest are dropped, the newest kept"
            assert len(kept) < n
            # Each delivered gap counts the drops it records, earlier gaps dropped later folded in.
            gaps = [e["data"] for e in platform.unique_events("gap")]
            assert any(g["reason"] == "disk full" for g in gaps), gaps
            assert sum(g["events_dropped"] for g in gaps) >= n - len(kept), "every drop is accounted for"
            assert (await platform.command("ping", {"id": "stuck-1"}))["status"] == 200
            await recovers(platform, filler)
            filler = None
            status = await platform.command("get_status", {"id": "stuck-2"})
            assert status["health"]["storage"]["status"] == "ok"
        finally:
            await platform.stop()
    finally:
        if filler is not None:
            filler.unlink(missing_ok=True)
        app.terminate()
