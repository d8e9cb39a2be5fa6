"""The wire backend (drivers/gpio/wire_pins.py): gpiozero devices in two processes joined by a wire file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gpiozero import DigitalInputDevice, DigitalOutputDevice

from drivers.gpio.config import GpioConfig
from drivers.gpio.driver import GpioUnavailable, make_pin_factory
from drivers.gpio.wire_pins import WireBoard, WireBoardError, WirePinFactory

LINES = ["hb.main", "lease.main", "fence.main"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def board(tmp_path: Path):
    with WireBoard.create(tmp_path / "wires", LINES) as b:
        yield b


def wait_for(check, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.002)
    return False


def test_lines_start_low_and_a_forced_line_reads_its_force_until_released(board: WireBoard) -> None:
    assert [board.get(n) for n in LINES] == [0, 0, 0]
    board.set("hb.main", 1)
    assert board.get("hb.main") == 1
    board.force("hb.main", 0)
    assert board.get("hb.main") == 0 and board.driven("hb.main") == 1
    board.set("hb.main", 0)
    board.set("hb.main", 1)
    assert board.get("hb.main") == 0, "a stuck wire ignores its driver"
    board.release("hb.main")
    assert board.get("hb.main") == 1
    with pytest.raises(WireBoardError, match="no line 'hb.backup'"):
        board.get("hb.backup")


def test_a_file_that_is_not_a_wire_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(WireBoardError, match="not a wire file"):
        WireBoard.open(tmp_path / "junk")


def test_a_heartbeat_toggled_in_another_process_reaches_when_changed_here(board: WireBoard) -> None:
    """The other process is a terminal: it toggles hb.main 10 times with gpiozero; this one counts edges."""
    factory = WirePinFactory(WireBoard.open(board.path), pins={5: "hb.main", 6: "lease.main"})
    edges: list[float] = []
    hb = DigitalInputDevice(5, pin_factory=factory, pull_up=None, active_state=True)
    hb.when_activated = lambda: edges.append(time.monotonic())
    hb.when_deactivated = lambda: edges.append(time.monotonic())
    child = textwrap.dedent(f"""
        import time
        from gpiozero import DigitalOutputDevice
        from drivers.gpio.wire_pins import WireBoard, WirePinFactory
        f = WirePinFactory(WireBoard.open({str(board.path)!r}), pins={{5: "hb.main"}})
        hb = DigitalOutputDevice(5, pin_factory=f)
        for _ in range(10):
            hb.toggle()
            time.sleep(0.02)
        f.close()
    """)
    subprocess.run([sys.executable, "-c", child], cwd=ROOT, check=True, timeout=20)
    assert wait_for(lambda: len(edges) == 10), f"saw {len(edges)} edges of 10"
    gaps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    assert min(gaps) > 0.01, "each edge seen once, at its time"
    # and the other direction: this process drives lease.main, the board shows it
    lease = DigitalOutputDevice(6, pin_factory=factory)
    lease.on()
    assert board.get("lease.main") == 1
    lease.off()
    assert board.get("lease.main") == 0
    hb.close()
    lease.close()
    factory.close()


def test_kiosk_toml_wire_backend_builds_the_factory(board: WireBoard) -> None:
    cfg = GpioConfig(backend="wire", wire_file=str(board.path), wire_pins={"5": "hb.main", "6": "lease.main"})
    factory = make_pin_factory(cfg.backend, cfg)
    assert isinstance(factory, WirePinFactory) and factory.lines == {5: "hb.main", 6: "lease.main"}
    factory.close()
    with pytest.raises(ValueError, match="wire_file"):
        GpioConfig(backend="wire")
    with pytest.raises(ValueError, match="BCM"):
        GpioConfig(backend="wire", wire_file="x", wire_pins={"99": "hb.main"})
    with pytest.raises(GpioUnavailable, match="no line 'hb.nope'"):
        make_pin_factory(
            "wire", GpioConfig(backend="wire", wire_file=str(board.path), wire_pins={"5": "hb.nope"})
        )
