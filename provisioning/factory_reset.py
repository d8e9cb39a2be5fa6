"""``kiosk provision factory-reset``: the kiosk back to a blank device, firmware kept.

Removed: the config file, the TLS files it names (device key, certificate, CA) and the CSR and QR
files beside the key, everything under ``storage.data_dir`` (outbox, stored commands, sessions,
documents, the platform's config overlay, self-test reports, diagnostics bundles) and under
``media.recording.dir`` when it lies elsewhere. Kept: the firmware (the virtual environment and the
code) and the directories themselves (their owners and modes, set by ``kiosk provision install``).

Deleting is not shredding: flash storage remaps blocks, so a kiosk leaving the county's hands should
also have its SD card or SSD erased with the vendor's tool.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from appliance import config as appliance_config
from kiosk_core.config import DEFAULT_PATH
from kiosk_core.errors import ConfigError
from provisioning.errors import ProvisioningError
from provisioning.steps import Paths

DEFAULT_DATA_DIR = Path("/var/lib/kiosk")


@dataclass(slots=True)
class ResetPlan:
    config: Path
    device_id: str | None
    files: list[Path] = field(default_factory=list)
    #: directories whose contents go (the directory itself stays)
    emptied: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"factory reset of {self.device_id or '(unknown device)'}: removes"]
        lines += [f"  file  {p}" for p in self.files]
        lines += [f"  all in {p}/" for p in self.emptied]
        lines.append("  keeps the firmware (" + str(firmware_root()) + f", {sys.prefix})")
        return "\n".join(lines)


def firmware_root() -> Path:
    return Path(appliance_config.__file__).resolve().parent.parent


def _protected(path: Path) -> str | None:
    """Why ``path`` must not be removed, or None."""
    resolved = path.resolve()
    if len(resolved.parts) <= 2:
        return f"{resolved} is a top-level directory"
    for keep in (firmware_root(), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()):
        if resolved == keep or keep.is_relative_to(resolved) or resolved.is_relative_to(keep):
            return f"{resolved} holds or is part of the firmware ({keep})"
    return None


def plan_reset(config: Path | None = None) -> ResetPlan:
    """What a reset of the kiosk configured at ``config`` removes. The config is read leniently: one
    the appliance refuses still names its data dir and key files."""
    path = config or DEFAULT_PATH
    raw: dict = {}
    if path.exists():
        try:
            raw = appliance_config.read_toml(path)
        except ConfigError:
            raw = {}
    device_id = None
    data_dir, recordings = DEFAULT_DATA_DIR, None
    try:
        cfg = appliance_config.parse(raw, str(path))
        device_id, data_dir, recordings = cfg.device.id, cfg.storage.data_dir, cfg.media.recording.dir
    except ConfigError:
        device = raw.get("device") if isinstance(raw.get("device"), dict) else {}
        device_id = device.get("id") if isinstance(device.get("id"), str) else None
        storage = raw.get("storage") if isinstance(raw.get("storage"), dict) else {}
        if isinstance(storage.get("data_dir"), str):
            data_dir = Path(storage["data_dir"])
    paths = Paths.for_config(path, raw)
    candidates = [
        path,
        paths.key,
        paths.cert,
        paths.ca,
        paths.csr,
        paths.qr_stem.with_suffix(".png"),
        paths.qr_stem.with_suffix(".svg"),
    ]
    plan = ResetPlan(config=path, device_id=device_id)
    for p in dict.fromkeys(candidates):
        if p.exists() or p.is_symlink():
            plan.files.append(p)
    for d in dict.fromkeys([data_dir, *([recordings] if recordings else [])]):
        if d.is_dir():
            plan.emptied.append(d)
    problems = [
        f"refusing to touch {p}: {why}" for p in [*plan.files, *plan.emptied] if (why := _protected(p))
    ]
    if problems:
        raise ProvisioningError(problems, code="provision.reset_refused")
    return plan


def execute(plan: ResetPlan) -> list[str]:
    """Remove what ``plan`` names; returns what could not be removed (empty when all went)."""
    failed = []
    for directory in plan.emptied:
        for entry in list(directory.iterdir()):
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError as exc:
                failed.append(f"{entry}: {exc.strerror or exc}")
    for path in plan.files:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
    os.sync()  # the removals reach the disk before the technician pulls the power
    return failed
