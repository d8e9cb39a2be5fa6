"""A stand-in for RAUC's installer service on a D-Bus, for tests, the demo and a technician's bench.

It serves ``de.pengutronix.rauc.Installer`` at ``/`` under the name ``de.pengutronix.rauc``, the
members of RAUC's published interface the kiosk uses (``appliance.rauc.INTERFACE_XML``), and plays a
board with two root-filesystem slots, ``rootfs.0`` (bootname ``A``) and ``rootfs.1`` (``B``), behind a
U-Boot-like boot chooser: a boot order and a number of boot attempts left per slot.

**State** is one JSON file (``--state``), rewritten atomically on every change, so a ``kill -9`` (a power
cut) leaves the last whole state. ``serve --boot`` is a boot of the board: the slot to run is chosen
from the order and the attempts (a slot with none left is skipped: that is the fallback), an install
that was cut short leaves its slot ``failed`` and out of the order. ``serve`` without ``--boot`` is a
restart of the service alone (the booted slot stays). ``Mark good`` gives a slot its attempts back,
``Mark bad`` takes them away and drops it from the order, ``Mark active`` puts it first.

**Bundles** are local files (a path or ``file://`` URL): an uncompressed tar holding

- ``manifest.raucm``, INI like RAUC's manifest: ``[update] compatible=``, ``version=``, and
  ``[image.rootfs] filename=``, ``sha256=`` (of the image), ``size=``;
- the image file it names (any bytes: the "root filesystem");
- ``manifest.sig``: the hex HMAC-SHA256 of ``manifest.raucm`` under the keyring's key. This keyed hash
  stands in for RAUC's CMS signature (X.509, checked against ``[keyring] path``): same role, same
  failure when the bundle was not made by the holder of the key, none of the PKI.

An install checks the signature, the compatible string and the image's hash, then "writes" the other
slot in progress ticks (``Progress`` via PropertiesChanged), activates it and sends ``Completed(0)``;
any failure sets ``LastError`` and sends ``Completed(1)``. ``--fail-install MESSAGE`` makes the write
fail on demand; ``--tick-s`` sets the pace (slow it down to cut the power mid-install).

``python -m sim.rauc_service serve --address unix:path=/tmp/bus --state /tmp/rauc.json --keyring K``
``python -m sim.rauc_service bundle out.raucb --version 0.2.0 --compatible village-kiosk --keyring K``
"""

import argparse
import asyncio
import configparser
import contextlib
import hashlib
import hmac
import io
import json
import logging
import signal
import sys
import tarfile
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusInt32, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from appliance.rauc import INTERFACE, OBJECT_PATH, SERVICE
from kiosk_core.fsutil import write_atomic

log = logging.getLogger("sim.rauc")

SLOTS = {"A": "rootfs.0", "B": "rootfs.1"}  # bootname -> slot name
ATTEMPTS = 3
MANIFEST = "manifest.raucm"
SIGNATURE = "manifest.sig"
FAILED = "org.freedesktop.DBus.Error.Failed"
WRITE_TICKS = 8


def sign(key: bytes, manifest: bytes) -> str:
    """The stand-in's signature of a manifest: hex HMAC-SHA256 under the keyring's key."""
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def make_bundle(
    path: Path,
    *,
    version: str,
    compatible: str,
    key: bytes,
    image: bytes = b"",
    tamper: bool = False,
) -> Path:
    """Write a bundle the stand-in installs. ``tamper`` signs one manifest and ships another."""
    image = image or f"rootfs {version}\n".encode() * 64
    manifest = (
        f"[update]\ncompatible={compatible}\nversion={version}\n\n"
        f"[image.rootfs]\nfilename=rootfs.img\nsha256={hashlib.sha256(image).hexdigest()}\nsize={len(image)}\n"
    ).encode()
    signature = sign(key, manifest)
    if tamper:
        manifest = manifest.replace(compatible.encode(), b"someone-elses-board")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in ((MANIFEST, manifest), ("rootfs.img", image), (SIGNATURE, signature.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return path


class BundleRejected(Exception):
    """What RAUC would put in LastError."""


def read_bundle(source: str, key: bytes, compatible: str) -> tuple[dict[str, str], bytes]:
    """(the manifest's [update] and [image.rootfs] keys, the image) of a checked bundle."""
    path = Path(urllib.parse.urlsplit(source).path if source.startswith("file://") else source)
    try:
        with tarfile.open(path, "r") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                if name not in members:
                    raise BundleRejected(f"Invalid bundle: no {name} in {path.name}")
                f = tar.extractfile(members[name])
                assert f is not None
                return f.read()

            manifest_raw, signature = read(MANIFEST), read(SIGNATURE).decode("ascii", "replace").strip()
            if not hmac.compare_digest(sign(key, manifest_raw), signature):
                raise BundleRejected("signature verification failed: the bundle is not signed by the keyring")
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(manifest_raw.decode("utf-8"))
            manifest = {**dict(parser["update"]), **dict(parser["image.rootfs"])}
            if manifest.get("compatible") != compatible:
                raise BundleRejected(
                    f"Compatible mismatch: Expected '{compatible}' but bundle manifest has "
                    f"'{manifest.get('compatible', '')}'"
                )
            image = read(manifest.get("filename", ""))
    except (OSError, tarfile.TarError, configparser.Error, KeyError, UnicodeDecodeError) as exc:
        raise BundleRejected(f"Failed to open bundle {path.name}: {exc}") from None
    if hashlib.sha256(image).hexdigest() != manifest.get("sha256"):
        raise BundleRejected("image rootfs.img: sha256 does not match the manifest")
    return manifest, image


class Board:
    """The two slots and the boot chooser, persisted in ``path``."""

    def __init__(self, path: Path, *, compatible: str, version: str) -> None:
        self.path = path
        if path.exists():
            self.s: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        else:
            self.s = {
                "compatible": compatible,
                "slots": {
                    "A": {"version": version, "status": "ok", "installed": None},
                    "B": {"version": "", "status": "", "installed": None},
                },
                "order": ["A"],
                "attempts": {"A": ATTEMPTS, "B": 0},
                "booted": None,
                "installing": None,
                "boots": 0,
                "installs": 0,
            }

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.s, indent=2).encode())

    @property
    def booted(self) -> str:
        return self.s["booted"]

    def other(self, bootname: str) -> str:
        return "B" if bootname == "A" else "A"

    def boot(self) -> str:
        """Power on: settle an interrupted install, then choose the slot like U-Boot's boot script."""
        s = self.s
        if s["installing"]:
            cut = s["installing"]
            log.warning("boot: the install into %s was cut short; the slot is unusable", SLOTS[cut])
            s["slots"][cut] = {"version": "", "status": "failed", "installed": None}
            s["order"] = [b for b in s["order"] if b != cut]
            s["attempts"][cut] = 0
            s["installing"] = None
        chosen = next((b for b in s["order"] if s["attempts"].get(b, 0) > 0), None)
        if chosen is None:  # every slot used up its attempts: reset and try the order again
            for b in s["order"] or ["A"]:
                s["attempts"][b] = ATTEMPTS
            chosen = (s["order"] or ["A"])[0]
        s["attempts"][chosen] -= 1
        s["booted"] = chosen
        s["boots"] += 1
        self.save()
        log.info("boot %d: slot %s (%s)", s["boots"], chosen, SLOTS[chosen])
        return chosen

    def resolve(self, identifier: str) -> str:
        if identifier == "booted":
            return self.booted
        if identifier == "other":
            return self.other(self.booted)
        for bootname, name in SLOTS.items():
            if identifier in (name, bootname):
                return bootname
        raise DBusError(FAILED, f"No slot with class rootfs and name {identifier} found")

    def mark(self, state: str, identifier: str) -> tuple[str, str]:
        b = self.resolve(identifier)
        s = self.s
        if state == "good":
            s["attempts"][b] = ATTEMPTS
            if b not in s["order"]:
                s["order"].append(b)
        elif state == "bad":
            s["attempts"][b] = 0
            s["order"] = [x for x in s["order"] if x != b]
        elif state == "active":
            s["attempts"][b] = ATTEMPTS
            s["order"] = [b] + [x for x in s["order"] if x != b]
        else:
            raise DBusError(FAILED, f"Unknown state '{state}': use good, bad or active")
        self.save()
        verb = {
            "good": "marked slot {} as good",
            "bad": "marked slot {} as bad",
            "active": "activated slot {}",
        }
        return SLOTS[b], verb[state].format(SLOTS[b])

    def primary(self) -> str:
        return next((b for b in self.s["order"] if self.s["attempts"].get(b, 0) > 0), self.booted)

    def status(self) -> list[tuple[str, dict[str, Variant]]]:
        out = []
        for b, name in SLOTS.items():
            slot = self.s["slots"][b]
            good = b in self.s["order"] and self.s["attempts"].get(b, 0) > 0
            info = {
                "class": Variant("s", "rootfs"),
                "device": Variant("s", f"/dev/mmcblk0p{2 if b == 'A' else 3}"),
                "type": Variant("s", "ext4"),
                "bootname": Variant("s", b),
                "state": Variant("s", "booted" if b == self.booted else "inactive"),
                "boot-status": Variant("s", "good" if good else "bad"),
                "status": Variant("s", slot["status"]),
            }
            if slot["version"]:
                info["bundle.version"] = Variant("s", slot["version"])
                info["bundle.compatible"] = Variant("s", self.s["compatible"])
            out.append((name, info))
        return out


class Installer(ServiceInterface):
    """``de.pengutronix.rauc.Installer`` over ``Board``."""

    def __init__(self, board: Board, key: bytes, *, tick_s: float, fail_install: str) -> None:
        super().__init__(INTERFACE)
        self.board = board
        self.key = key
        self.tick_s = tick_s
        self.fail_install = fail_install
        self._operation = "idle"
        self._last_error = ""
        self._progress: tuple[int, str, int] = (0, "", 0)
        self._task: asyncio.Task[None] | None = None

    # --- methods ----------------------------------------------------------------------------------

    @dbus_method()
    def InstallBundle(self, source: DBusStr, args: DBusDict) -> None:  # noqa: N802 - RAUC's names
        if self._operation != "idle":
            raise DBusError(FAILED, "Already processing a different method")
        self._set(Operation="installing", LastError="")
        self._task = asyncio.get_running_loop().create_task(self._install(source))

    @dbus_method()
    def Mark(  # noqa: N802
        self, state: DBusStr, slot_identifier: DBusStr
    ) -> Annotated[tuple[str, str], DBusSignature("ss")]:
        return self.board.mark(state, slot_identifier)

    @dbus_method()
    def GetSlotStatus(  # noqa: N802
        self,
    ) -> Annotated[list[tuple[str, dict[str, Variant]]], DBusSignature("a(sa{sv})")]:
        return self.board.status()

    @dbus_method()
    def GetPrimary(self) -> DBusStr:  # noqa: N802
        return SLOTS[self.board.primary()]

    # --- properties -------------------------------------------------------------------------------

    @dbus_property(access=PropertyAccess.READ)
    def Operation(self) -> DBusStr:  # noqa: N802
        return self._operation

    @dbus_property(access=PropertyAccess.READ)
    def LastError(self) -> DBusStr:  # noqa: N802
        return self._last_error

    @dbus_property(access=PropertyAccess.READ)
    def Progress(self) -> Annotated[tuple[int, str, int], DBusSignature("(isi)")]:  # noqa: N802
        return self._progress

    @dbus_property(access=PropertyAccess.READ)
    def Compatible(self) -> DBusStr:  # noqa: N802
        return self.board.s["compatible"]

    @dbus_property(access=PropertyAccess.READ, name="Variant")
    def variant(self) -> DBusStr:  # not "Variant": that would shadow dbus_fast's Variant in this class
        return ""

    @dbus_property(access=PropertyAccess.READ)
    def BootSlot(self) -> DBusStr:  # noqa: N802
        return self.board.booted

    @dbus_signal()
    def Completed(self, result: int) -> DBusInt32:  # noqa: N802
        return result

    # --- the install ------------------------------------------------------------------------------

    def _set(self, **changed: Any) -> None:
        for name, value in changed.items():
            setattr(self, f"_{_snake(name)}", value)
        self.emit_properties_changed(changed)

    async def _step(self, percent: int, message: str, depth: int) -> None:
        self._set(Progress=(percent, message, depth))
        await asyncio.sleep(self.tick_s)

    async def _install(self, source: str) -> None:
        board = self.board
        target = board.other(board.booted)
        try:
            await self._step(0, "Installing", 1)
            await self._step(10, "Determining slot states", 2)
            await self._step(20, "Checking bundle", 2)
            try:
                manifest, image = await asyncio.to_thread(
                    read_bundle, source, self.key, board.s["compatible"]
                )
            except BundleRejected as exc:
                raise BundleRejected(f"Failed to check bundle: {exc}") from None
            await self._step(30, "Checking bundle done.", 2)
            board.s["installing"] = target
            board.s["slots"][target] = {"version": "", "status": "pending", "installed": None}
            board.s["order"] = [b for b in board.s["order"] if b != target]
            board.s["installs"] += 1
            board.save()
            for tick in range(WRITE_TICKS):
                await self._step(40 + tick * 50 // WRITE_TICKS, f"Updating slot {SLOTS[target]}", 3)
                if self.fail_install and tick == WRITE_TICKS // 2:
                    board.s["installing"] = None
                    board.s["slots"][target] = {"version": "", "status": "failed", "installed": None}
                    board.save()
                    raise BundleRejected(f"Failed updating slot {SLOTS[target]}: {self.fail_install}")
            board.s["slots"][target] = {
                "version": manifest["version"],
                "status": "ok",
                "installed": round(time.time(), 3),
                "sha256": hashlib.sha256(image).hexdigest(),
            }
            board.s["installing"] = None
            board.save()
            board.mark("active", target)
            await self._step(100, "Installing done.", 1)
        except BundleRejected as exc:
            log.warning("install failed: %s", exc)
            self._set(Progress=(100, "Installing failed.", 1), LastError=str(exc), Operation="idle")
            self.Completed(1)
            return
        log.info("installed %s into %s", manifest["version"], SLOTS[target])
        self._set(Operation="idle")
        self.Completed(0)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


async def serve(args: argparse.Namespace, board: Board, key: bytes) -> None:
    bus = await MessageBus(bus_address=args.address).connect()
    installer = Installer(board, key, tick_s=args.tick_s, fail_install=args.fail_install)
    bus.export(OBJECT_PATH, installer)
    await bus.request_name(SERVICE)
    print(f"rauc stand-in: {SERVICE} on {args.address}, booted {board.booted}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    done = asyncio.ensure_future(bus.wait_for_disconnect())
    await asyncio.wait({done, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    with contextlib.suppress(Exception):
        bus.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the installer on a bus")
    s.add_argument("--address", required=True, help="D-Bus address, e.g. unix:path=/tmp/kiosk-bus")
    s.add_argument("--state", required=True, help="the board's state file (JSON)")
    s.add_argument("--keyring", required=True, help="file holding the signing key")
    s.add_argument("--boot", action="store_true", help="this start is a boot of the board")
    s.add_argument("--compatible", default="village-kiosk", help="the system's compatible (first start)")
    s.add_argument("--version", default="0.1.0", help="slot A's version (first start)")
    s.add_argument("--tick-s", type=float, default=0.05, help="pause after each progress step")
    s.add_argument("--fail-install", default="", help="make the slot write fail with this message")
    b = sub.add_parser("bundle", help="make a bundle")
    b.add_argument("out")
    b.add_argument("--version", required=True)
    b.add_argument("--compatible", default="village-kiosk")
    b.add_argument("--keyring", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cmd == "bundle":
        out = make_bundle(
            Path(args.out),
            version=args.version,
            compatible=args.compatible,
            key=Path(args.keyring).read_bytes().strip(),
        )
        print(hashlib.sha256(out.read_bytes()).hexdigest(), out)
        return 0
    board = Board(Path(args.state), compatible=args.compatible, version=args.version)
    if args.boot or board.s["booted"] is None:
        board.boot()
    asyncio.run(serve(args, board, Path(args.keyring).read_bytes().strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
