"""The diagnostics bundle: one ``tar.gz`` a technician or the platform takes away to find out what is
wrong with a kiosk, with nothing secret or personal in it.

``build_bundle`` writes ``<data_dir>/diag/kiosk-diag-<device>-<UTC time>.tar.gz`` (0600, the last
``KEEP_BUNDLES`` kept) holding:

* ``logs/journal.txt`` (``journalctl`` of the kiosk units when systemd's journal is there) or
  ``logs/<file>`` (the data dir's ``*.log`` files otherwise), every line through ``kiosk_core.logs.mask``
  (ID numbers and ``password=...`` style secrets);
* ``config.json``: the effective config with every password, key, token, secret and PIN (hash)
  replaced by ``***`` (``kiosk_core.config.redacted``), or the loader's error and the file's text with
  those values redacted when it does not load;
* ``versions.json``: firmware, Python, the key packages, the OS and the board;
* ``health.json``: the appliance's retained local-bus state (``appliance``, ``peripherals``,
  ``media``; never ``session``, which may name the villager), as the caller fetched it;
* ``selftest.json`` / ``selftest.txt``: the last hardware self-test report, when there is one.

``kiosk diag`` builds it from a shell; the platform asks for it with the command ``diag.collect``
(``Diagnostics``, below), whose reply names the bundle and carries it inline when it is small.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.subsystem import Context, Subsystem
from kiosk_core.commands import CommandSpec, NoParams
from kiosk_core.config import SECRET_KEYS, redacted
from kiosk_core.errors import CommandError
from kiosk_core.fsutil import write_atomic
from kiosk_core.localbus import STATE_PREFIX
from kiosk_core.logs import mask
from kiosk_core.payload import decode_json_object

#: where the hardware self-test keeps its last report (``last.json``, ``last.txt``), under data_dir
SELFTEST_DIR = "selftest"
DIAG_DIR = "diag"
KEEP_BUNDLES = 5
#: a reply carries the bundle itself (base64) up to this size; larger ones are named only
INLINE_MAX = 256 * 1024
#: retained local-bus states that describe health; ``session`` is left out on purpose (personal)
HEALTH_STATES = ("appliance", "peripherals", "media")
JOURNAL_UNITS = ("kiosk-appliance", "kiosk-media", "kiosk-ui", "mosquitto")
JOURNAL_LINES = 5000
LOG_TAIL_BYTES = 512 * 1024
PACKAGES = (
    "village-kiosk",
    "paho-mqtt",
    "pydantic",
    "av",
    "aiortc",
    "textual",
    "cryptography",
    "segno",
    "gpiozero",
    "pyserial",
    "pyusb",
)
_SECRET_WORDS = "|".join(SECRET_KEYS)
# `name = value` where the name holds a secret word (password, key, token, pin, ...), in TOML text.
_SECRET_ASSIGNMENT = re.compile(
    rf"""(?im)(["']?[\w.-]*(?:{_SECRET_WORDS})[\w.-]*["']?\s*=\s*)("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,}}#]+)"""
)


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path
    size: int
    sha256: str

    def reply(self, inline_max: int = INLINE_MAX) -> dict[str, Any]:
        """``{path, size, sha256, inline}`` and ``base64`` when the bundle is at most ``inline_max`` bytes."""
        out: dict[str, Any] = {"path": str(self.path), "size": self.size, "sha256": self.sha256}
        out["inline"] = self.size <= inline_max
        if out["inline"]:
            out["base64"] = base64.b64encode(self.path.read_bytes()).decode("ascii")
        return out


def redact_toml_text(text: str) -> str:
    """A config file's text with the value of every secret-looking key replaced by ``"***"``."""
    return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + '"***"', mask(text))


def journal(lines: int = JOURNAL_LINES, timeout_s: float = 10.0) -> str | None:
    """The kiosk units' journal (masked), or None without journalctl or when it shows nothing."""
    exe = shutil.which("journalctl")
    if exe is None:
        return None
    args = [exe, "--no-pager", "-o", "short-iso", "-n", str(lines)]
    for unit in JOURNAL_UNITS:
        args += ["-u", unit]
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0 or not text.strip() or text.strip() == "-- No entries --":
        return None
    return "\n".join(mask(line) for line in text.splitlines()) + "\n"


def data_dir_logs(data_dir: Path) -> dict[str, str]:
    """``name -> masked tail`` of the ``*.log`` files in ``data_dir`` and ``data_dir/logs``."""
    out: dict[str, str] = {}
    for directory in (data_dir, data_dir / "logs"):
        try:
            files = sorted(p for p in directory.glob("*.log") if p.is_file())
        except OSError:
            continue
        for path in files:
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                    text = f.read().decode("utf-8", errors="replace")
            except OSError as exc:
                text = f"(cannot read: {exc.strerror})\n"
            out[path.name] = "\n".join(mask(line) for line in text.splitlines()) + "\n"
    return out


def versions() -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    os_release = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key in ("PRETTY_NAME", "VERSION_ID", "ID"):
                os_release[key.lower()] = value.strip('"')
    board = None
    with contextlib.suppress(OSError):
        board = Path("/proc/device-tree/model").read_bytes().rstrip(b"\x00").decode(errors="replace")
    uname = platform.uname()
    return {
        "firmware": __version__,
        "python": sys.version.split()[0],
        "packages": packages,
        "os": os_release,
        "kernel": f"{uname.system} {uname.release} {uname.machine}",
        "board": board,
    }


def config_section(cfg: Any | None, config_path: Path | None, error: str | None) -> dict[str, Any]:
    if cfg is not None:
        return {"source": str(config_path) if config_path else None, "config": redacted(cfg)}
    out: dict[str, Any] = {"source": str(config_path) if config_path else None, "error": error}
    if config_path is not None:
        try:
            out["text_redacted"] = redact_toml_text(config_path.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            out["text_redacted"] = None
            out["read_error"] = exc.strerror
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o600
    tar.addfile(info, io.BytesIO(data))


def _json(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8")


def build_bundle(
    *,
    data_dir: Path,
    device_id: str,
    cfg: Any | None,
    config_path: Path | None = None,
    config_error: str | None = None,
    health: Mapping[str, Any] | None = None,
    out_dir: Path | None = None,
    use_journal: bool = True,
) -> Bundle:
    """Write the bundle (see the module docstring) and return where, how big and its SHA-256."""
    now = time.time()
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = f"kiosk-diag-{device_id}-{stamp}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        logs = journal() if use_journal else None
        log_files = {"journal.txt": logs} if logs is not None else data_dir_logs(data_dir)
        if not log_files:  # say so, rather than leave the reader wondering what was lost
            log_files = {
                "none.txt": f"no journal entries of {', '.join(JOURNAL_UNITS)} and no *.log in {data_dir}\n"
            }
        for name, text in log_files.items():
            _add(tar, f"{prefix}/logs/{name}", text.encode("utf-8"), now)
        _add(tar, f"{prefix}/config.json", _json(config_section(cfg, config_path, config_error)), now)
        _add(tar, f"{prefix}/versions.json", _json(versions()), now)
        _add(
            tar,
            f"{prefix}/health.json",
            _json(dict(health) if health is not None else {"error": "not collected"}),
            now,
        )
        selftest = data_dir / SELFTEST_DIR
        for name, member in (("last.json", "selftest.json"), ("last.txt", "selftest.txt")):
            with contextlib.suppress(OSError):
                _add(tar, f"{prefix}/{member}", (selftest / name).read_bytes(), now)
        manifest = {
            "device_id": device_id,
            "created": stamp,
            "logs": "journal" if logs is not None else "data_dir",
            "log_files": sorted(log_files),
            "redacted": "passwords, keys, tokens, secrets and the PIN hash; ID numbers masked",
        }
        _add(tar, f"{prefix}/manifest.json", _json(manifest), now)
    data = buf.getvalue()
    directory = out_dir or data_dir / DIAG_DIR
    path = directory / f"{prefix}.tar.gz"
    write_atomic(path, data)  # mkstemp: 0600
    _prune(directory)
    return Bundle(path, len(data), hashlib.sha256(data).hexdigest())


def _prune(directory: Path) -> None:
    bundles = sorted(directory.glob("kiosk-diag-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    for old in bundles[:-KEEP_BUNDLES]:
        with contextlib.suppress(OSError):
            old.unlink()


async def fetch_health(host: str, port: int, timeout_s: float = 2.0) -> dict[str, Any]:
    """The retained ``HEALTH_STATES`` from the local bus at ``host:port``, waiting at most
    ``timeout_s``; ``{"error": ...}`` when the bus cannot be reached."""
    from kiosk_core.errors import LinkError
    from kiosk_core.mqtt import MqttConnection

    conn = MqttConnection(host=host, port=port, client_id=f"kiosk-diag-{os.getpid()}", name="diag")
    states: dict[str, Any] = {}
    try:
        await conn.connect(timeout_s=timeout_s)
    except LinkError as exc:
        return {"error": f"local bus not reachable: {exc.message}"}
    try:
        await conn.subscribe(*[(f"{STATE_PREFIX}/{name}", 1) for name in HEALTH_STATES], timeout_s=timeout_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async for msg in conn.messages():
                    name = msg.topic.rsplit("/", 1)[-1]
                    states[name] = _decode(msg.payload, msg.topic)
                    if set(states) >= set(HEALTH_STATES):
                        break
    except LinkError as exc:
        states["error"] = exc.message
    finally:
        await conn.close()
    for name in HEALTH_STATES:
        states.setdefault(name, None)  # not retained: the process never ran against this bus
    return states


def _decode(payload: bytes, topic: str) -> Any:
    try:
        return decode_json_object(payload, topic) if payload else None
    except ValueError as exc:
        return {"unreadable": str(exc)}


class Diagnostics(Subsystem):
    """Serves ``diag.collect``; keeps the latest health states of the local bus for the bundle."""

    name = "diagnostics"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.states: dict[str, Any] = {name: None for name in HEALTH_STATES}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        for name in HEALTH_STATES:
            self.ctx.subscribe_local(f"{STATE_PREFIX}/{name}", self._on_state)

    def _on_state(self, topic: str, payload: bytes) -> None:
        self.states[topic.rsplit("/", 1)[-1]] = _decode(payload, topic)

    def commands(self) -> Mapping[str, CommandSpec]:
        spec = CommandSpec(
            name="diag.collect",
            summary="write a diagnostics bundle (logs, redacted config, versions, health, last self-test); "
            f"path, size, sha256, and the bundle as base64 when <= {INLINE_MAX // 1024} KiB",
            params=NoParams,
            handler=self._collect,
            personal=False,
            process="appliance",
        )
        return {spec.name: spec}

    async def _collect(self, params: NoParams) -> dict[str, Any]:
        cfg = self.ctx.config
        if self._lock.locked():
            raise CommandError(409, "diag.collect: a bundle is being written already")
        async with self._lock:
            try:
                bundle = await asyncio.to_thread(
                    build_bundle,
                    data_dir=self.ctx.data_dir,
                    device_id=cfg.device.id,
                    cfg=cfg,
                    health=dict(self.states),
                )
                return await asyncio.to_thread(bundle.reply)
            except OSError as exc:
                raise CommandError(
                    500, f"diag.collect: cannot write the bundle: {exc.strerror or exc}"
                ) from None
