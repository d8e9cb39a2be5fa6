"""systemd integration without systemd: a real notify socket, real signals, the real daemon."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiosk_core.sdnotify import Notifier


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.messages: list[str] = []

    def collect_until(self, predicate, timeout_s: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.messages.extend(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass
            if predicate(self.messages):
                return self.messages
        raise AssertionError(f"notify messages so far: {self.messages}")


def test_notifier_is_silent_outside_systemd(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and n.ready() is False and n.watchdog_s is None


def test_ready_watchdog_status_reload_and_stopping(kiosk_config: Path, tmp_path: Path):
    ns = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "900000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk_cli.main", "--config", str(kiosk_config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        msgs = ns.collect_until(lambda m: "READY=1" in m and m.count("WATCHDOG=1") >= 2)
        assert any(m.startswith("STATUS=") for m in msgs)
        assert msgs.index("READY=1") < msgs.index("WATCHDOG=1")
        proc.send_signal(signal.SIGHUP)
        ns.collect_until(lambda m: "RELOADING=1" in m and m.count("READY=1") >= 2)
        proc.send_signal(signal.SIGTERM)
        ns.collect_until(lambda m: "STOPPING=1" in m)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_config_typo_exits_78_so_systemd_does_not_loop(tmp_path: Path):
    bad = tmp_path / "kiosk.toml"
    bad.write_text(
        '[device]\nid = "k1"\nname = "x"\nrole = "maim"\nregion = ["33","3308","330803","330803100","330803100201"]\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", "--config", str(bad), "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 78
    assert "device.role = 'maim'" in out.stdout + out.stderr
