"""The failover arbiter's firmware on CPython: ``drivers/failover_controller`` on the MicroPython stand-ins.

    python -m sim.arbiter --wire-file /dev/shm/room --switcher-pty /tmp/switcher.pty \\
        [--broker 127.0.0.1:1883] [--lease-log lease.log] [--config config.json] [--set KEY=JSON ...]

The wire file's lines are ``hb.T``, ``lease.T`` and ``fence.T`` for the terminals (``main``, ``backup``
by default); the controller's GPIO numbers map onto them. ``--config`` is the board's ``config.json``
(default: the one in drivers/failover_controller, its pins remapped to the wire lines); ``--set
lease.detect_ms=300`` overrides one key. ``--broker`` turns MQTT reporting on (off without it).
``--umqtt PATH`` runs micropython-lib's own umqtt/simple.py (a file or a checkout) instead of the
stand-in. ``--no-wdt`` leaves the watchdog out (debugging).

The lease log is jsonl, one record per lease event, written the instant the controller acts on it
(``revoke`` before the pulses stop, ``grant`` before the first pulse):
``{"t_mono_ns": time.monotonic_ns(), "event": "boot"|"tie"|"grant"|"revoke", "grant": n,
"holder": "main"|"backup"|null, "reason": str}``. SIGTERM or SIGINT ends it cleanly (lines left as
they are, the MQTT state ``offline`` published when connected).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from drivers.gpio.wire_pins import WireBoard
from sim import micropython

CONFIG = Path(__file__).resolve().parent.parent / "drivers" / "failover_controller" / "config.json"


def wire_config(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[int, str]]:
    """The board config with its pins as they are, and the GPIO -> wire line map for them."""
    lines: dict[int, str] = {}
    for t, p in cfg["pins"].items():
        for kind in ("hb", "lease", "fence"):
            lines[int(p[kind])] = f"{kind}.{t}"
    return cfg, lines


def set_key(cfg: dict[str, Any], assignment: str) -> None:
    key, _, raw = assignment.partition("=")
    if not key or not _:
        raise SystemExit(f"--set {assignment!r}: expected KEY=JSON, e.g. lease.detect_ms=300")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.arbiter", description=__doc__.split("\n\n")[0])
    ap.add_argument("--wire-file", required=True, help="the WireBoard file of the room's lines")
    ap.add_argument("--switcher-pty", required=True, help="the switcher's serial device (a pty link)")
    ap.add_argument("--config", default=str(CONFIG), help="the board's config.json")
    ap.add_argument("--broker", help="host:port of the MQTT broker (reporting off without it)")
    ap.add_argument("--lease-log", help="jsonl lease log (t_mono_ns, event, grant, holder, reason)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config key")
    ap.add_argument("--umqtt", help="micropython-lib's umqtt/simple.py (file or checkout) to run instead")
    ap.add_argument("--no-wdt", action="store_true", help="no watchdog (debugging)")
    args = ap.parse_args(argv)

    cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
    for assignment in args.set:
        set_key(cfg, assignment)
    mqtt = cfg.setdefault("mqtt", {})
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        mqtt["host"], mqtt["port"] = host or "127.0.0.1", int(port)
    else:
        mqtt["host"] = None
    cfg, lines = wire_config(cfg)
    board = WireBoard.open(args.wire_file)
    uart_id = cfg.get("switcher", {}).get("uart", 0)
    client_class = None
    if args.umqtt:
        from sim.micropython import umqtt_real

        client_class = umqtt_real.load(args.umqtt).MQTTClient
    micropython.install(board, lines, {uart_id: args.switcher_pty}, client_class)

    import machine  # the stand-ins, installed just now

    from drivers.failover_controller import main as firmware

    log = open(args.lease_log, "a", encoding="utf-8", buffering=1) if args.lease_log else None  # noqa: SIM115

    def on_event(record: dict[str, Any]) -> None:
        line = json.dumps({"t_mono_ns": time.monotonic_ns(), **record})
        if log is not None:
            log.write(line + "\n")
        print(line, flush=True)

    stop = {"now": False}

    def ask_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)

    sw = cfg["switcher"]
    uart = machine.UART(uart_id, baudrate=sw.get("baud", 9600), tx=sw.get("tx"), rx=sw.get("rx"), timeout=0)
    wdt = None if args.no_wdt else machine.WDT(timeout=min(cfg.get("wdt_ms", 2000), 8388))
    make_client = None
    if mqtt.get("host"):
        make_client = client_class or sys.modules["umqtt.simple"].MQTTClient
    print(f"arbiter: pid {os.getpid()}, wires {args.wire_file}, switcher {args.switcher_pty}", flush=True)
    ctl = firmware.run(cfg, uart, wdt, make_client, on_event, should_stop=lambda: stop["now"])
    rep = ctl.reporter
    if rep is not None and rep.client is not None:
        try:
            rep.client.publish(rep.base + "/state", json.dumps({"state": "offline"}), retain=True)
            rep.client.disconnect()
        except Exception:  # noqa: BLE001 - the broker may be gone; the Will says lost then
            pass
    if log is not None:
        log.close()
    board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
