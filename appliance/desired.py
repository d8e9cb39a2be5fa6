"""Configuration pushed by the platform: ``config/desired`` in, ``config/reported`` out.

The desired document is ``{"version": N, "config": {...}}`` where ``config`` is an overlay of the
device's TOML tables. It is applied only when N is newer than the stored version; it is validated
merged onto the local file (so a bad push can never produce an invalid effective config), written
atomically (temp file, fsync, rename, fsync of the directory) and reported. Some keys may not be
changed remotely (``LOCKED``: the device's identity, its whole connection to the platform, its data
directory and its local bus): a document touching one is rejected as a whole with reason ``locked``
and the keys; some take effect only after a restart, and the report says which.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import config as config_mod
from appliance.config import KioskConfig
from kiosk_core.errors import ConfigError
from kiosk_core.fsutil import write_atomic
from kiosk_core.localbus import decode_json_object

log = logging.getLogger("kiosk.config")

# Never changed by config/desired, only by the local file: who the device is (device.*), where and how
# it connects to the platform (fleet.*: host, port, TLS, credentials, reply prefixes, everything: an
# operator must not be able to move a device to another broker), where its data lives, its local bus,
# and where firmware comes from (the update service's bus, plain sources for the bench).
LOCKED = ("device", "fleet", "storage.data_dir", "bus", "ota.dbus_address", "ota.allow_plain_loopback")
# The JSON-safe integer range: every platform language reads these versions exactly.
MAX_VERSION = 2**53 - 1
# Keys the running daemon applies without a restart (subsystems add their own via reconfigure()).
# The fleet.* ones come only from the local file (SIGHUP): they are LOCKED for config/desired.
HOT = (
    "logging.level",
    "fleet.telemetry_interval_s",
    "fleet.drain_rate_per_s",
    "storage.outbox_quota_mb",
    "storage.command_retention_days",
)


def is_locked(key: str) -> bool:
    return any(key == locked or key.startswith(locked + ".") for locked in LOCKED)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def without_locked(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``d`` (an overlay of TOML tables) without the keys ``LOCKED`` covers."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if not is_locked(key):
            out[k] = without_locked(v, key) if isinstance(v, dict) else v
    return out


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
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("config: stored desired config %s unreadable (%s); ignoring it", self.path, exc)
            return
        # Stored by a firmware that let the platform change these: never again applied.
        locked = sorted(k for k in flatten(self.overlay) if is_locked(k))
        if locked:
            log.error(
                "config: stored desired v%d sets locked key(s) %s; running without them",
                self.version,
                ", ".join(locked),
            )
            self.overlay = without_locked(self.overlay)

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
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise ValueError(
            f"version must be a positive integer from 1 to 2^53 - 1 ({MAX_VERSION}), "
            f"got {str(version)[:40]!r}"
        )
    cfg = obj.get("config")
    if not isinstance(cfg, dict):
        raise ValueError("config must be a JSON object of TOML tables")
    return version, cfg


@dataclass(frozen=True)
class Verdict:
    """What a desired overlay would do: ``config`` is None when it is rejected, and ``reason`` then says
    why: ``locked`` (it touches ``keys`` that only the local file may set) or ``invalid``."""

    config: KioskConfig | None
    errors: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    reason: str = ""
    keys: list[str] = field(default_factory=list)


def evaluate(base_path: Path, current: KioskConfig, version: int, overlay: dict[str, Any]) -> Verdict:
    """Validate an overlay merged onto the local file.

    Blocking (reads and validates the config file): the daemon runs it in a thread."""
    keys = sorted(k for k in flatten(overlay) if is_locked(k))
    if not keys:
        try:
            new = config_mod.load(base_path, overlay=overlay)
            # However the overlay spells a key, the effective locked values must be the local file's.
            keys = [k for k in changed_keys(config_mod.load(base_path), new) if is_locked(k)]
        except ConfigError as exc:
            errors = [p.replace(str(base_path), f"desired v{version}") for p in exc.problems]
            return Verdict(None, errors, reason="invalid")
        if not keys:
            return Verdict(new, changed=changed_keys(current, new))
    errors = [f"{k}: may not be changed remotely (locked: set only in the local file)" for k in keys]
    return Verdict(None, errors, reason="locked", keys=keys)
