"""Host health read from /proc and /sys: cheap, no psutil, tolerant of files a board lacks."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import time
import uuid
from pathlib import Path


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"nobootid-{uuid.uuid4()}"


def uptime_s() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


_libc = None
_synced_cache: tuple[float, bool] = (-1.0, False)


def clock_synced() -> bool:
    """True when the kernel says the clock is NTP-synchronised (adjtimex returns TIME_OK..TIME_WAIT).

    Cached for a second: it is asked for every stored event.
    """
    global _synced_cache
    now = time.monotonic()
    if now - _synced_cache[0] < 1.0:
        return _synced_cache[1]
    _synced_cache = (now, _adjtimex_synced())
    return _synced_cache[1]


def _adjtimex_synced() -> bool:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex with modes = 0 (read only)
        state = _libc.adjtimex(buf)
        return 0 <= state < 5  # 5 is TIME_ERROR: "clock not synchronized"
    except (OSError, AttributeError):
        return False


class CpuMeter:
    """CPU busy percentage between two calls, from /proc/stat."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def percent(self) -> float | None:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[0] <= last[0]:
            return None
        total, idle = now[0] - last[0], now[1] - last[1]
        return round(100.0 * (total - idle) / total, 1)


def memory() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return {"total_bytes": out.get("MemTotal", 0), "available_bytes": out.get("MemAvailable", 0)}


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def disk(path: Path) -> dict[str, int]:
    try:
        usage = shutil.disk_usage(path)
        return {"free_bytes": usage.free, "total_bytes": usage.total}
    except OSError:
        return {"free_bytes": 0, "total_bytes": 0}


def soc_temperature_c() -> float | None:
    """The SoC temperature where the board exposes one (Pi: thermal_zone0 'cpu-thermal')."""
    base = Path("/sys/class/thermal")
    try:
        zones = sorted(base.glob("thermal_zone*"))
    except OSError:
        return None
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip()
            if kind in ("cpu-thermal", "x86_pkg_temp", "soc_thermal", "cpu_thermal") or len(zones) == 1:
                return round(int((zone / "temp").read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def now_ts() -> dict[str, float | bool]:
    return {"wall": round(time.time(), 3), "mono": round(time.monotonic(), 3), "time_synced": clock_synced()}
