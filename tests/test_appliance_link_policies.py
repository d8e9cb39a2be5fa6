"""Fleet-link policies: backlog rate cap without starving replies, quota gaps, offline telemetry, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import write_config
from fleet_helpers import (
    ApplianceProcess,
    Platform,
    durable_platform,
    platform_away,
    produce,
    produce_stored,
    wait_appliance_ready,
)
from fleet_schema import SCHEMA
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.intake import RejectedEvent, parse_local_event
from sim.mosquitto import Mosquitto


async def test_backlog_drains_capped_while_commands_are_answered_at_once(
    tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto
):
    cfg = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
    )
    cfg.write_text(
        cfg.read_text().replace("initial_delay_max_s = 0", "initial_delay_max_s = 0\ndrain_rate_per_s = 400")
    )
    # The platform has subscribed (persistent session, saved by the broker) before the outage: when the
    # broker is back, the backlog is queued for the platform even if the kiosk reconnects first.
    away = await platform_away(central_broker)
    app = ApplianceProcess(cfg, tmp_path / "a.log").start()
    try:
        await wait_appliance_ready(bus_broker.port)
        await produce(
            bus_broker.port, [{"type": "test.backlog", "data": {"n": i}, "id": f"b{i}"} for i in range(1200)]
        )
        await asyncio.sleep(1.0)
        central_broker.start()
        p = await away.again().start()
        try:
            assert p.session_present, "the restarted broker kept the platform's session"
            await p.wait_for(lambda: p.of("state"), timeout_s=15, what="online after outage")
            t0 = time.monotonic()
            reply = await p.command("ping", {"id": "during-backlog"})
            assert reply["status"] == 200 and time.monotonic() - t0 < 1.0, (
                "replies do not wait for the backlog"
            )
            assert len(p.events("test.backlog")) < 1200, "the backlog is still draining at the capped rate"
            t1 = time.monotonic()
            await p.wait_for(
                lambda: len(p.unique_events("test.backlog")) >= 1200, timeout_s=20, what="backlog"
            )
            elapsed = time.monotonic() - t0
            assert elapsed >= 1200 / 400 * 0.8, f"drained in {elapsed:.2f}s: faster than the 400/s cap"
            assert [e["data"]["n"] for e in p.unique_events("test.backlog")] == list(range(1200))
            assert t1 >= t0
        finally:
            await p.stop()
    finally:
        app.terminate()


async def stored_telemetry(db_path: Path, at_least: int, timeout_s: float = 15.0) -> None:
    """Wait until the appliance's outbox holds ``at_least`` telemetry samples (read beside it: WAL)."""
    import sqlite3

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)) as db:
            count = db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
        if count >= at_least:
            return
        assert loop.time() < deadline, f"only {count} telemetry samples stored after {timeout_s}s"
        await asyncio.sleep(0.1)


async def test_full_quota_drops_oldest_and_reports_a_gap(
    tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto
):
    cfg = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
        telemetry_interval_s=1,
        extra="outbox_quota_mb = 0.2\n",
    )
    # extra lands in [storage] (the last table written by write_config)
    # Subscribed before the outage (persistent session, saved): nothing sent after it is missed.
    away = await platform_away(central_broker)
    app = ApplianceProcess(cfg, tmp_path / "a.log").start()
    try:
        await wait_appliance_ready(bus_broker.port)
        await stored_telemetry(tmp_path / "data" / "outbox.sqlite3", at_least=2)  # kept while offline
        pad = "x" * 400
        # Stored (not only acknowledged by the local broker) before the platform is back: the drops
        # happen while the stored telemetry is still there to go first.
        await produce_stored(
            bus_broker.port,
            [{"type": "test.fill", "data": {"n": i, "pad": pad}, "id": f"f{i}"} for i in range(1500)],
        )
        await asyncio.sleep(0.5)
        central_broker.start()
        p = await away.again().start()
        try:
            assert p.session_present, "the restarted broker kept the platform's session"
            await p.wait_for(
                lambda: p.events("test.fill") and p.events("test.fill")[-1]["data"]["n"] == 1499,
                timeout_s=30,
                what="newest event",
            )
            gaps = [e["data"] for e in p.events("gap")]
            assert gaps, "drops must be reported"
            dropped_events = sum(g["events_dropped"] for g in gaps)
            kept = {e["data"]["n"] for e in p.unique_events("test.fill")}
            assert dropped_events > 0 and len(kept) < 1500
            assert any(g["telemetry_dropped"] for g in gaps), f"telemetry goes first: {gaps}"
            assert sorted(kept) == list(range(1500 - len(kept), 1500)), (
                "the oldest are dropped, the newest kept"
            )
            assert (await p.command("ping"))["status"] == 200
        finally:
            await p.stop()
    finally:
        app.terminate()


async def test_telemetry_from_an_outage_arrives_after_reconnect(
    tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto
):
    cfg = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
        telemetry_interval_s=1,
    )
    # A persistent session, saved by the broker: the telemetry stored during the outage is queued for
    # the platform after the restart even if the kiosk reconnects before the platform does.
    p = await durable_platform(central_broker)
    app = ApplianceProcess(cfg, tmp_path / "a.log").start()
    try:
        await p.wait_for(lambda: p.of("telemetry"), what="live telemetry")
        await p.stop()
        central_broker.kill()
        t_down = time.time()
        await asyncio.sleep(2.0)
        central_broker.start()
        p = await p.again().start()
        assert p.session_present, "the restarted broker kept the platform's session"
        await p.wait_for(
            lambda: [
                t for t in p.of("telemetry") if t["ts"]["wall"] < t_down + 2.0 and t["ts"]["wall"] > t_down
            ],
            timeout_s=15,
            what="stored telemetry",
        )
        sample = p.of("telemetry")[-1]
        for key in (
            "cpu_percent",
            "load",
            "memory",
            "disk",
            "soc_temp_c",
            "uptime_s",
            "outbox",
            "dropped",
            "peripherals",
        ):
            assert key in sample
    finally:
        app.terminate()
        await p.stop()


# --- TLS -----------------------------------------------------------------------------------------


def make_pki(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    for name, cn in (("server", "127.0.0.1"), ("device", "kiosk-0001")):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        ext = d / f"{name}.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n"
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            "-extfile",
            str(ext),
        )


@pytest.mark.timeout(90)
async def test_tls_with_client_certificate(tmp_path: Path, bus_broker: Mosquitto):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    from sim.mosquitto import free_port

    tls_port = free_port()
    tls_broker = Mosquitto(
        workdir=tmp_path / "tls-broker",
        name="tls",
        extra_config=(
            f"listener {tls_port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
            f"keyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n"
        ),
    ).start()
    try:
        cfg = write_config(
            tmp_path / "kiosk.toml", bus_port=bus_broker.port, fleet_port=tls_port, data_dir=tmp_path / "data"
        )
        cfg.write_text(
            cfg.read_text().replace(
                "[bus]",
                f'[fleet.tls]\nca = "{pki}/ca.pem"\ncert = "{pki}/device.pem"\nkey = "{pki}/device.key"\n'
                "handshake_timeout_s = 3\n\n[bus]",
            )
        )
        app = ApplianceProcess(cfg, tmp_path / "a.log").start()
        try:
            from kiosk_core.mqtt import MqttConnection, Tls

            watcher = MqttConnection(
                host="127.0.0.1",
                port=tls_port,
                client_id="watcher",
                tls=Tls(ca=f"{pki}/ca.pem", cert=f"{pki}/device.pem", key=f"{pki}/device.key"),
            )
            await watcher.connect()
            await watcher.subscribe(("kiosk/v1/#", 1))
            async with asyncio.timeout(15):
                async for msg in watcher.messages():
                    if msg.topic.endswith("/state") and b'"online"' in msg.payload:
                        assert SCHEMA.problems("state", msg.payload) == []
                        break
            await watcher.close()
        finally:
            app.terminate()
    finally:
        tls_broker.close()


@pytest.mark.timeout(60)
async def test_tls_handshake_timeout_against_a_silent_server(tmp_path: Path, bus_broker: Mosquitto):
    """A server that accepts TCP but never answers the TLS hello must not hang the link."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    cfg = write_config(
        tmp_path / "kiosk.toml", bus_port=bus_broker.port, fleet_port=port, data_dir=tmp_path / "data"
    )
    cfg.write_text(
        cfg.read_text().replace(
            "[bus]", f'[fleet.tls]\nca = "{pki}/ca.pem"\nhandshake_timeout_s = 1\n\n[bus]'
        )
    )
    app = ApplianceProcess(cfg, tmp_path / "a.log").start()
    try:
        deadline = time.monotonic() + 20
        while len(accepted) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread fills it
            await asyncio.sleep(0.2)
        assert len(accepted) >= 3, "the link gives up on a silent handshake and retries"
        assert "cannot connect" in app.log() or "handshake" in app.log().lower() or "timed out" in app.log()
        assert app.alive
    finally:
        app.terminate()
        stop.set()
        server.close()
        for s in accepted:
            s.close()


# --- local producers' hostile input ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_from_a_producer_are_rejected_or_parsed(payload: bytes):
    try:
        etype, data, pid = parse_local_event(payload)
    except RejectedEvent as exc:
        assert str(exc)
    else:
        assert isinstance(etype, str) and isinstance(data, dict)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["type", "data", "id", "producer", "extra"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=70), st.dictionaries(st.text(), st.integers())),
        max_size=5,
    )
)
def test_structured_garbage_gets_a_reason(doc):
    import json

    try:
        parse_local_event(json.dumps(doc).encode())
    except RejectedEvent as exc:
        assert any(word in str(exc) for word in ("type", "data", "id", "producer", "unknown"))


async def test_malformed_local_events_are_recorded_and_the_daemon_lives(
    kiosk_config: Path, tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto
):
    p = await Platform(central_broker.port).start()
    app = ApplianceProcess(kiosk_config, tmp_path / "a.log").start()
    try:
        await p.wait_for(lambda: p.of("state"), what="online")
        from kiosk_core.mqtt import MqttConnection

        conn = MqttConnection(host="127.0.0.1", port=bus_broker.port, client_id="evil")
        await conn.connect()
        for bad in (
            b"",
            b"\x00" * 100,
            b'{"type": "A B"}',
            b'{"type": "x", "data": [1]}',
            b"{" * 5000,
            b'{"type": "ok.event", "data": {}, "id": ""}',
        ):
            await conn.publish("kiosk/local/event", bad, qos=1)
        await conn.publish("kiosk/local/event", b'{"type": "ok.event", "data": {"fine": true}}', qos=1)
        await conn.close()
        await p.wait_for(lambda: p.events("ok.event"), what="the good event after the bad ones")
        rejected = p.events("bus.event_rejected")
        assert len(rejected) == 6 and all(r["data"]["reason"] for r in rejected)
        assert app.alive
    finally:
        app.terminate()
        await p.stop()
