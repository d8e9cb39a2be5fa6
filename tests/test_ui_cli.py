"""``kiosk ui``: finding the local bus, and the real program in a real terminal (tmux at 100x30)."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_config

from kiosk_core.errors import ConfigError
from kiosk_ui.cli import bus_address, register
from sim.mosquitto import Mosquitto
from sim.ui_harness import SAMPLES, StateFeed

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str], config: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args((["--config", config] if config else []) + ["ui", *argv])


def test_bus_comes_from_the_config_and_flags_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    cfg = write_config(tmp_path / "kiosk.toml", bus_port=18830, fleet_port=18831, data_dir=tmp_path / "data")
    assert bus_address(parse([], str(cfg))) == ("127.0.0.1", 18830)
    assert bus_address(parse(["--bus-port", "2000"], str(cfg))) == ("127.0.0.1", 2000)
    assert bus_address(parse(["--bus-host", "127.0.0.2", "--bus-port", "2001"])) == ("127.0.0.2", 2001)


def test_a_broken_config_is_reported_not_ignored(tmp_path: Path):
    bad = tmp_path / "kiosk.toml"
    bad.write_text("[bus]\nport = 'many'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bus.port"):
        bus_address(parse([], str(bad)))
    result = subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", "--config", str(bad), "ui"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "bus.port" in result.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
async def test_kiosk_ui_runs_in_a_real_terminal_and_answers_a_number_key(
    bus_broker: Mosquitto, tmp_path: Path
):
    socket = tmp_path / "tmux.sock"

    async def tmux(*args: str) -> str:
        """One tmux command on our own server socket (never the user's), off the event loop."""
        done = await asyncio.to_thread(
            subprocess.run, ["tmux", "-S", str(socket), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    async with StateFeed("127.0.0.1", bus_broker.port) as feed:
        await feed.publish("session", SAMPLES["catalog"])
        command = (
            f"cd {ROOT} && LANG=C.UTF-8 {sys.executable} -m kiosk_cli.main ui --bus-port {bus_broker.port} "
            f"--log-file {tmp_path / 'ui.log'}"
        )
        await tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", "kiosk", command)
        try:
            screen = ""
            deadline = time.monotonic() + 15
            while "请选择部门" not in screen:
                assert time.monotonic() < deadline, f"kiosk ui never drew the catalog:\n{screen}"
                await asyncio.sleep(0.1)
                screen = await tmux("capture-pane", "-p", "-t", "kiosk")
            lines = screen.splitlines()
            assert len(lines) <= 30 and max(map(len, lines)) <= 100
            assert " 4  民政" in screen and " 9  English" in screen
            await tmux("send-keys", "-t", "kiosk", "4")
            chosen = await feed.next_intent("select_department", timeout_s=5)
            assert chosen.body["department_id"] == "minzheng"
            assert "Traceback" not in (tmp_path / "ui.log").read_text(encoding="utf-8")
        finally:
            await tmux("kill-server")
