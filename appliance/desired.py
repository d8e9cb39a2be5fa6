"""Configuration pushed by the platform: ``config/desired`` in, ``config/reported`` out.

The desired document is ``{"version": N, "config": {...}}`` where ``config`` is an overlay of the
device's TOML tables. It is applied only when N is newer than the stored version; it is validated
merged onto the local file (so a bad push can never produce an invalid effective config), written
atomically (temp file, fsync, rename, fsync of the directory) and reported. Some keys may not be
changed remotely (the device's identity and its data directory); some take effect only after a
restart, and the report says which.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from appliance import config as config_mod
from appliance.config import KioskConfig
from kiosk_core.errors import ConfigError
from kiosk_core.fsutil import write_atomic
from kiosk_core.localbus import decode_json_object

log = logging.getLogger("kiosk.config")

LOCKED = ("device.id", "device.region", "storage.data_dir", "bus")
# Keys the running daemon applies without a restart (subsystems add their own via reconfigure()).
HOT = (
    "logging.level",
    "fleet.telemetry_interval_s",
    "fleet.drain_rate_per_s",
    "storage.outbox_quota_mb",
    "storage.command_retention_days",
)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def changed_keys(old: KioskConfig, new: KioskConfig) -> list[str]:
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


class DesiredStore:
    """The stored overlay and its version under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "config-desired.json"
        self.version = 0
        self.overlay: dict[str, Any] = {}
        self.last_report: dict[str, Any] | None = None

    def load(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            self.version = int(doc["version"])
            self.overlay = dict(doc["config"])
            self.last_report = doc.get("report")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("config: stored desired config %s unreadable (%s); ignoring it", self.path, exc)

    async def save(self, version: int, overlay: dict[str, Any], report: dict[str, Any]) -> None:
        """Store the applied overlay crash-safely, then make it the current one. The file is written in a
        thread (temp file, fsync, rename, fsync of the directory): the event loop carries the fleet link.
        Raises ``OSError`` and leaves the current version as it was if the file cannot be written."""
        doc = {"version": version, "config": overlay, "report": report, "stored_at": time.time()}
        await asyncio.to_thread(
            write_atomic, self.path, json.dumps(doc, ensure_ascii=False, indent=1).encode()
        )
        self.version, self.overlay, self.last_report = version, overlay, report


def parse_desired(payload: bytes) -> tuple[int, dict[str, Any]]:
    obj = decode_json_object(payload, "config/desired")
    extra = set(obj) - {"version", "config"}
    if extra:
        raise ValueError(f"unknown field(s) {sorted(extra)}; allowed: version, config")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**63:
        raise ValueError(f"version must be a positive integer, got {str(version)[:40]!r}")
    cfg = obj.get("config")
    if not isinstance(cfg, dict):
        raise ValueError("config must be a JSON object of TOML tables")
    return version, cfg


def evaluate(
    base_path: Path, current: KioskConfig, version: int, overlay: dict[str, Any]
) -> tuple[KioskConfig | None, list[str], list[str]]:
    """Validate an overlay. Returns (new config or None, errors, changed keys).

    Blocking (reads and validates the config file): the daemon runs it in a thread."""
    touched = flatten(overlay)
    errors = [
        f"{k}: may not be changed remotely"
        for k in touched
        for locked in LOCKED
        if k == locked or k.startswith(locked + ".")
    ]
    if errors:
        return None, errors, []
    try:
        new = config_mod.load(base_path, overlay=overlay)
    except ConfigError as exc:
        return None, [p.replace(str(base_path), f"desired v{version}") for p in exc.problems], []
    return new, [], changed_keys(current, new)
