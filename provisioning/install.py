"""``kiosk provision install``: turn a Debian / Raspberry Pi OS root into a kiosk.

ROOT is the running system (``--root /``, the default) or an image directory (a debootstrap tree, a
mounted SD card). Laid down under ROOT:

- the ``kiosk`` system user (home ``/var/lib/kiosk``, no login) in the device groups dialout, gpio,
  plugdev, video, audio and render; missing groups are created as system groups. The host's
  ``groupadd``/``useradd``/``usermod --root ROOT`` do it where they exist (they work on a foreign-arch
  image too), else ROOT's passwd, group, shadow and gshadow are edited directly, the way they would;
- ``/etc/kiosk`` 0750 root:kiosk, ``/etc/kiosk/keys`` 0700 and every file in it 0600 kiosk,
  ``/var/lib/kiosk`` and its ``recordings`` 0700 kiosk, kept so at every boot by a tmpfiles.d entry;
- the configuration: ``--config FILE`` copied to ``/etc/kiosk/kiosk.toml`` (0640 root:kiosk) after the
  kiosk's own ``kiosk config check`` accepted it; ``--template`` writes a minimal one; with neither the
  device stays unprovisioned and ``kiosk-firstboot.service`` runs the wizard on tty1. A checked example
  is always written beside it (``kiosk.toml.example``);
- the local bus config (``/etc/kiosk-mosquitto/mosquitto.conf``: loopback only, persistence on; refused
  otherwise), the systemd units, the polkit rule that lets the kiosk user (only) reboot through
  ``systemctl reboot``, a udev rule for /dev/gpiochip* and /dev/dma_heap/*; Debian's own
  ``mosquitto.service`` and ``getty@tty1.service`` masked (the local bus and the screen take their
  place), the kiosk units enabled (``systemctl --root=ROOT enable``, or the same symlinks without it);
- on a Raspberry Pi (``--pi``, or found by ``/proc/device-tree/model`` or ``/etc/rpi-issue`` under ROOT):
  the venv sees the system's site-packages (picamera2's libcamera bindings come only from apt) and the
  console uses a large font (Terminus 16x32) so the screen is large print.

Every step looks first and changes only what differs: a second run prints "nothing to change".
``--dry-run`` prints what would change and changes nothing. Exit status 0 done, 1 a step failed,
2 the request or ROOT is not usable (nothing changed).

This module stands on kiosk_core and the standard library only (the import contract of
``provisioning``); the configuration is validated by running the kiosk's own ``kiosk config check``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiosk_core.errors import KioskError
from kiosk_core.fsutil import write_atomic

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

TREE = Path(__file__).resolve().parent.parent
PREFIX = "/opt/kiosk"
VENV = f"{PREFIX}/.venv"
USER = "kiosk"
HOME = "/var/lib/kiosk"
NOLOGIN = "/usr/sbin/nologin"
#: device groups of the kiosk user: serial (dialout), /dev/gpiochip* (gpio), USB card readers (plugdev),
#: cameras and /dev/dri/card* (video), sound (audio), /dev/dri/renderD* (render)
DEVICE_GROUPS = ("dialout", "gpio", "plugdev", "video", "audio", "render")
UNITS = (
    "kiosk-mosquitto.service",
    "kiosk-appliance.service",
    "kiosk-media.service",
    "kiosk-ui.service",
    "kiosk-firstboot.service",
)
#: Debian's broker would take 127.0.0.1:1883 from the local bus; the screen owns tty1.
MASKED = ("mosquitto.service", "getty@tty1.service")
#: Debian packages ROOT needs, and what for (reported when missing; installed with --apt)
PACKAGES = {
    "mosquitto": "the local bus (kiosk-mosquitto.service)",
    "polkitd": "the platform's reboot command (the polkit rule)",
    "python3-venv": "the firmware's venv",
}
PI_PACKAGES = {
    "python3-picamera2": "Pi camera modules (libcamera's bindings come only from apt)",
    "python3-lgpio": "GPIO on a Pi 5 (gpiozero's lgpio pin factory)",
    "console-setup": "the large console font",
}
CONSOLE_FONT = {"CHARMAP": "UTF-8", "CODESET": "guess", "FONTFACE": "Terminus", "FONTSIZE": "16x32"}

POLKIT_RULE = """\
// Installed by `kiosk provision install`: the kiosk user may reboot the device through logind
// (`systemctl reboot`, the platform's reboot command), nothing else. kiosk-appliance.service runs with
// NoNewPrivileges=yes, so sudo is not an option.
polkit.addRule(function(action, subject) {
    if ((action.id == "org.freedesktop.login1.reboot" ||
         action.id == "org.freedesktop.login1.reboot-multiple-sessions") &&
        subject.user == "kiosk") {
        return polkit.Result.YES;
    }
});
"""
UDEV_RULE = """\
# Installed by `kiosk provision install` (Raspberry Pi OS has the same in 99-com.rules; plain Debian not):
# GPIO chips for the gpio group (kiosk-appliance), DMA heaps for libcamera for the video group (kiosk-media).
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
SUBSYSTEM=="dma_heap", GROUP="video", MODE="0660"
"""
TMPFILES = f"""\
# Installed by `kiosk provision install`: owners and modes of the kiosk's directories, restored at boot.
d /etc/kiosk 0750 root {USER} -
d /etc/kiosk/keys 0700 {USER} {USER} -
d {HOME} 0700 {USER} {USER} -
d {HOME}/recordings 0700 {USER} {USER} -
"""
TEMPLATE = """\
# /etc/kiosk/kiosk.toml written by `kiosk provision install`: the least the kiosk starts with.
# Every key and its default: docs/kiosk.example.toml. Check changes with `kiosk config check`.
[device]
id = "{device_id}"
name = "{name}"
role = "main"
# province, city, county, township, village: set the device's own codes
region = ["33", "3308", "330803", "330803100", "330803100201"]

[fleet]
host = "127.0.0.1"
port = 1883
"""


class InstallError(KioskError):
    """The request or ROOT cannot be used; the message says what to do. Nothing was changed."""

    code = "provision.install"


@dataclass(frozen=True)
class Options:
    """What to install where (the parsed command line)."""

    root: Path
    config: Path | None = None
    template: bool = False
    pi: bool | None = None
    venv_from: Path | None = None
    source: Path = TREE
    apt: bool = False
    enable: bool = True
    dry_run: bool = False


# --- ROOT's account database -----------------------------------------------------------------------


def _read_db(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(":") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Accounts:
    """Users and groups as ROOT's own /etc/passwd and /etc/group say (never the host's NSS)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reload()

    def reload(self) -> None:
        self.passwd = {f[0]: f for f in _read_db(self.root / "etc/passwd") if len(f) >= 7}
        self.group = {f[0]: f for f in _read_db(self.root / "etc/group") if len(f) >= 4}

    def uid(self, name: str) -> int:
        """``name``'s uid in ROOT, -1 if there is none (yet)."""
        return int(self.passwd[name][2]) if name in self.passwd else -1

    def gid(self, name: str) -> int:
        return int(self.group[name][2]) if name in self.group else -1

    def members(self, group: str) -> set[str]:
        return {m for m in self.group[group][3].split(",") if m} if group in self.group else set()


class AccountFiles:
    """Direct edits of ROOT's passwd, group, shadow and gshadow, for hosts without the passwd package's
    tools. Ids are taken the way ``useradd --system`` does: the highest free one from 999 down to 100
    (a user's own group gets the user's uid when that gid is free). Every file is rewritten atomically
    with its mode and owner kept, so a reader never sees half a file."""

    SYS_MIN, SYS_MAX = 100, 999

    def __init__(self, root: Path) -> None:
        self.root = root

    def _free_id(self, used: set[int], prefer: int | None = None) -> int:
        if prefer is not None and prefer not in used:
            return prefer
        for candidate in range(self.SYS_MAX, self.SYS_MIN - 1, -1):
            if candidate not in used:
                return candidate
        raise InstallError(f"{self.root}/etc: no free system id from {self.SYS_MIN} to {self.SYS_MAX}")

    def _rewrite(self, name: str, edit: Callable[[list[list[str]]], list[list[str]]]) -> None:
        path = self.root / "etc" / name
        if not path.exists():
            if name in ("shadow", "gshadow"):
                return  # a root without shadow passwords: nothing to keep in step
            raise InstallError(f"{path} is missing: not a usable root")
        st = path.stat()
        rows = edit(_read_db(path))
        text = "".join(":".join(r) + "\n" for r in rows)
        write_atomic(path, text.encode(), mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)

    def add_group(self, name: str, gid: int | None = None) -> int:
        used = {int(f[2]) for f in _read_db(self.root / "etc/group") if len(f) >= 3 and f[2].isdigit()}
        new_gid = self._free_id(used, gid)
        self._rewrite("group", lambda rows: [*rows, [name, "x", str(new_gid), ""]])
        self._rewrite("gshadow", lambda rows: [*rows, [name, "!", "", ""]])
        return new_gid

    def add_user(self, name: str, home: str, shell: str) -> int:
        used = {int(f[2]) for f in _read_db(self.root / "etc/passwd") if len(f) >= 3 and f[2].isdigit()}
        uid = self._free_id(used)
        gid = self.add_group(name, uid)
        entry = [name, "x", str(uid), str(gid), "", home, shell]
        self._rewrite("passwd", lambda rows: [*rows, entry])
        days = str(int(time.time() // 86400))
        self._rewrite("shadow", lambda rows: [*rows, [name, "!", days, "", "", "", "", "", ""]])
        return uid

    def add_member(self, group: str, user: str) -> None:
        def edit(index: int) -> Callable[[list[list[str]]], list[list[str]]]:
            def apply(rows: list[list[str]]) -> list[list[str]]:
                for row in rows:
                    if row[0] == group and len(row) > index:
                        members = [m for m in row[index].split(",") if m]
                        if user not in members:
                            row[index] = ",".join([*members, user])
                return rows

            return apply

        self._rewrite("group", edit(3))
        self._rewrite("gshadow", edit(3))


# --- the installer ---------------------------------------------------------------------------------


def is_pi(root: Path) -> bool:
    """ROOT is (or is an image for) a Raspberry Pi: its device tree says so, or Raspberry Pi OS's
    /etc/rpi-issue is there (an image directory has no /proc of its own)."""
    model = root / "proc/device-tree/model"
    try:
        if "raspberry pi" in model.read_bytes().decode(errors="replace").lower():
            return True
    except OSError:
        pass
    return (root / "etc/rpi-issue").exists()


def installed_packages(root: Path) -> set[str]:
    """Packages dpkg lists as installed in ROOT."""
    status = root / "var/lib/dpkg/status"
    if not status.exists():
        return set()
    found: set[str] = set()
    for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, flags=re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            found.add(fields["Package"])
    return found


def check_local_bus_config(text: str, source: str) -> None:
    """The local bus must be loopback only and persistent; anything else is refused before install."""
    problems = []
    listeners = [line.split() for line in text.splitlines() if line.split()[:1] == ["listener"]]
    if not listeners:
        problems.append("no `listener` line (mosquitto would listen on every interface)")
    for words in listeners:
        if len(words) < 3 or words[2] not in ("127.0.0.1", "::1", "localhost"):
            problems.append(f"`{' '.join(words)}` is not bound to loopback")
    if not re.search(r"^persistence\s+true\s*$", text, flags=re.M):
        problems.append("`persistence true` is missing")
    if problems:
        raise InstallError(f"{source}: " + "; ".join(problems))


class Installer:
    """Applies ``Options`` to ROOT one idempotent step at a time; ``changes`` lists what changed (or, in a
    dry run, what would)."""

    def __init__(self, opts: Options, out: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.root = opts.root
        self.out = out
        self.changes: list[str] = []
        self.warnings: list[str] = []
        self.accounts = Accounts(self.root)
        self.pi = is_pi(self.root) if opts.pi is None else opts.pi

    # -- primitives

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def change(self, what: str, apply: Callable[[], object]) -> None:
        self.changes.append(what)
        self.out(("would " if self.opts.dry_run else "") + what)
        if not self.opts.dry_run:
            apply()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.out(f"warning: {text}")

    def _owner(self, user: str, group: str) -> tuple[int, int]:
        return self.accounts.uid(user), self.accounts.gid(group)

    def _fix_owner_mode(self, absolute: str, mode: int, user: str, group: str) -> None:
        p = self.path(absolute)
        uid, gid = self._owner(user, group)
        st = p.lstat()
        if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
            self.change(f"chown {user}:{group} {absolute}", lambda: os.chown(p, uid, gid))
        if stat.S_IMODE(st.st_mode) != mode:
            self.change(f"chmod {mode:04o} {absolute}", lambda: os.chmod(p, mode))

    def directory(self, absolute: str, mode: int, user: str = "root", group: str = "root") -> None:
        p = self.path(absolute)
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise InstallError(f"{p} exists and is not a directory")
        if not p.exists():
            uid, gid = self._owner(user, group)

            def make() -> None:
                p.mkdir(parents=True)
                os.chown(p, uid, gid)
                os.chmod(p, mode)

            self.change(f"mkdir {absolute} ({mode:04o} {user}:{group})", make)
            return
        self._fix_owner_mode(absolute, mode, user, group)

    def file(
        self, absolute: str, data: bytes, mode: int = 0o644, user: str = "root", group: str = "root"
    ) -> None:
        p = self.path(absolute)
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise InstallError(f"{p} exists and is not a regular file")
        if not p.exists() or p.read_bytes() != data:
            uid, gid = self._owner(user, group)
            verb = "update" if p.exists() else "write"
            self.change(
                f"{verb} {absolute} ({mode:04o} {user}:{group})",
                lambda: write_atomic(p, data, mode=mode, uid=uid, gid=gid),
            )
            return
        self._fix_owner_mode(absolute, mode, user, group)

    def symlink(self, absolute: str, target: str) -> None:
        p = self.path(absolute)
        if p.is_symlink() and os.readlink(p) == target:
            return

        def make() -> None:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink():
                p.unlink()
            p.symlink_to(target)

        if p.exists() and not p.is_symlink():
            raise InstallError(f"{p} exists and is not a symlink (a unit file of its own?)")
        self.change(f"ln -s {target} {absolute}", make)

    def run(self, argv: Sequence[str], what: str) -> None:
        def go() -> None:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise InstallError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")

        self.change(what, go)

    # -- steps

    def preflight(self) -> None:
        """Refuse, before touching anything, a ROOT or a request that cannot work."""
        root = self.root
        if not root.is_dir():
            raise InstallError(f"--root {root} is not a directory")
        os_release = _os_release(root)
        like = {os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()}
        if not (root / "etc/debian_version").exists() and "debian" not in like:
            raise InstallError(
                f"{root} is not a Debian-like root (no etc/debian_version, ID/ID_LIKE "
                f"{sorted(like - {''}) or 'unset'}): Debian 12 or Raspberry Pi OS is required"
            )
        if not (root / "etc/passwd").exists() or not (root / "etc/group").exists():
            raise InstallError(f"{root}/etc/passwd or group is missing: not a usable root")
        if os.geteuid() != 0 and not self.opts.dry_run:
            raise InstallError("must run as root (users, owners and /etc are changed); try --dry-run")
        for name in UNITS:
            if not (self.opts.source / "systemd" / name).is_file():
                raise InstallError(f"{self.opts.source}/systemd/{name} is missing: pass --source TREE")
        bus = self.opts.source / "provisioning/mosquitto-local.conf"
        if not bus.is_file():
            raise InstallError(f"{bus} is missing: pass --source TREE")
        check_local_bus_config(bus.read_text(encoding="utf-8"), str(bus))
        if self.opts.config is not None:
            if self.opts.template:
                raise InstallError("--config and --template exclude each other")
            self.check_config(self.opts.config)
        with tempfile.TemporaryDirectory(prefix="kiosk-install-") as tmp:
            # The template is written as kiosk.toml.example at least: it must be one the kiosk accepts.
            example = Path(tmp) / "kiosk.toml"
            example.write_text(self.template(), encoding="utf-8")
            self.check_config(example, "the template")
        if self.opts.venv_from is not None and not self.opts.venv_from.exists():
            raise InstallError(f"--venv-from {self.opts.venv_from} does not exist")

    def check_config(self, path: Path, what: str = "--config") -> None:
        """Validate with the kiosk's own ``kiosk config check`` (ROOT's venv on the running system, else
        the firmware this installer runs from); raises with its report."""
        if not path.is_file():
            raise InstallError(f"{what} {path} is not a file")
        checker = self._config_checker()
        if checker is None:
            self.warn(f"{what} not validated: no `kiosk` here to run `kiosk config check` with")
            return
        done = subprocess.run(
            [*checker, "config", "check", str(path)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise InstallError(
                f"kiosk config check refused {what} {path}:\n{done.stderr.strip() or done.stdout}"
            )

    def _config_checker(self) -> list[str] | None:
        own = self.path(VENV) / "bin/kiosk"
        if self.root.resolve() == Path("/") and own.exists():
            return [str(own)]
        if importlib.util.find_spec("kiosk_cli") is not None:
            return [sys.executable, "-m", "kiosk_cli.main"]
        return None

    def packages(self) -> None:
        wanted = dict(PACKAGES)
        if self.pi:
            wanted.update(PI_PACKAGES)
        have = installed_packages(self.root)
        # Raspberry Pi OS before bookworm named polkit's daemon policykit-1.
        missing = [p for p in wanted if p not in have and not (p == "polkitd" and "policykit-1" in have)]
        if not missing:
            return
        if self.opts.apt:
            chroot = [] if self.root.resolve() == Path("/") else ["chroot", str(self.root)]
            env = "DEBIAN_FRONTEND=noninteractive"
            argv = [*chroot, "env", env, "apt-get", "install", "-y", "--no-install-recommends", *missing]
            self.run(argv, f"apt-get install {' '.join(missing)}")
            return
        for p in missing:
            self.warn(f"package {p} is not installed in {self.root} ({wanted[p]}): install it or pass --apt")

    def users(self) -> None:
        tools = _account_tools()
        direct = AccountFiles(self.root)
        root_arg = ["--root", str(self.root.resolve())]
        for group in DEVICE_GROUPS:
            if group not in self.accounts.group:
                if tools:
                    self.run(["groupadd", *root_arg, "--system", group], f"groupadd --system {group}")
                else:
                    self.change(
                        f"add system group {group} (direct edit)", lambda g=group: direct.add_group(g)
                    )
        self.accounts.reload()
        if USER not in self.accounts.passwd:
            if tools:
                argv = ["useradd", *root_arg, "--system", "--user-group", "--home-dir", HOME]
                argv += ["--no-create-home", "--shell", NOLOGIN, "--comment", "village kiosk", USER]
                self.run(argv, f"useradd --system {USER}")
            else:
                self.change(
                    f"add system user {USER} (direct edit)", lambda: direct.add_user(USER, HOME, NOLOGIN)
                )
            self.accounts.reload()
        for group in DEVICE_GROUPS:
            if USER not in self.accounts.members(group) and (
                group in self.accounts.group or self.opts.dry_run
            ):
                if tools:
                    self.run(
                        ["usermod", *root_arg, "--append", "--groups", group, USER],
                        f"add {USER} to group {group}",
                    )
                else:
                    self.change(
                        f"add {USER} to group {group} (direct edit)",
                        lambda g=group: direct.add_member(g, USER),
                    )
        self.accounts.reload()

    def directories(self) -> None:
        self.directory("/etc/kiosk", 0o750, "root", USER)
        self.directory("/etc/kiosk/keys", 0o700, USER, USER)
        keys = self.path("/etc/kiosk/keys")
        if keys.is_dir():
            for key in sorted(keys.iterdir()):
                if key.is_file() and not key.is_symlink():
                    self._fix_owner_mode(f"/etc/kiosk/keys/{key.name}", 0o600, USER, USER)
        self.directory(HOME, 0o700, USER, USER)
        self.directory(f"{HOME}/recordings", 0o700, USER, USER)
        self.directory("/etc/kiosk-mosquitto", 0o755)

    def files(self) -> None:
        source = self.opts.source
        self.file("/etc/tmpfiles.d/kiosk.conf", TMPFILES.encode())
        self.file(
            "/etc/kiosk-mosquitto/mosquitto.conf", (source / "provisioning/mosquitto-local.conf").read_bytes()
        )
        # polkitd keeps rules.d 0700 polkitd:root; a root without polkit yet gets it 0755 root.
        if not self.path("/etc/polkit-1/rules.d").exists():
            self.directory("/etc/polkit-1/rules.d", 0o755)
        self.file("/etc/polkit-1/rules.d/50-kiosk-reboot.rules", POLKIT_RULE.encode())
        self.file("/etc/udev/rules.d/60-kiosk-devices.rules", UDEV_RULE.encode())
        for name in UNITS:
            self.file(f"/etc/systemd/system/{name}", (source / "systemd" / name).read_bytes())
        self.file("/etc/kiosk/kiosk.toml.example", self.template().encode(), 0o640, "root", USER)
        if self.opts.config is not None:
            self.file("/etc/kiosk/kiosk.toml", self.opts.config.read_bytes(), 0o640, "root", USER)
        elif self.opts.template and not self.path("/etc/kiosk/kiosk.toml").exists():
            self.file("/etc/kiosk/kiosk.toml", self.template().encode(), 0o640, "root", USER)
        elif self.path("/etc/kiosk/kiosk.toml").exists():
            self._fix_owner_mode("/etc/kiosk/kiosk.toml", 0o640, "root", USER)

    def template(self) -> str:
        """A minimal config the appliance's loader accepts; the device id comes from ROOT's hostname."""
        hostname = ""
        try:
            hostname = self.path("/etc/hostname").read_text(encoding="utf-8").strip()
        except OSError:
            pass
        device_id = re.sub(r"[^A-Za-z0-9_-]", "-", hostname)[:64] or "kiosk-0001"
        return TEMPLATE.format(device_id=device_id, name=f"kiosk {device_id}")

    def raspberry_pi(self) -> None:
        if not self.pi:
            return
        path = self.path("/etc/default/console-setup")
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        wanted = _set_shell_vars(current, CONSOLE_FONT)
        if wanted != current:
            self.file("/etc/default/console-setup", wanted.encode())
        cfg = self.path(VENV) / "pyvenv.cfg"
        if cfg.exists():
            text = cfg.read_text(encoding="utf-8")
            fixed = re.sub(
                r"^include-system-site-packages\s*=.*$",
                "include-system-site-packages = true",
                text,
                flags=re.M,
            )
            if "include-system-site-packages" not in fixed:
                fixed += "include-system-site-packages = true\n"
            if fixed != text:
                # What `python3 -m venv --system-site-packages` writes: apt's libcamera becomes visible.
                self.file(f"{VENV}/pyvenv.cfg", fixed.encode())

    def venv(self) -> None:
        kiosk = self.path(VENV) / "bin/kiosk"
        if self.opts.venv_from is None:
            if not kiosk.exists():
                self.warn(f"no {VENV}/bin/kiosk in {self.root}: the units start it; pass --venv-from TREE")
            return
        if kiosk.exists():
            return
        chroot = [] if self.root.resolve() == Path("/") else ["chroot", str(self.root)]
        if not (self.path("/usr/bin/python3").exists()):
            raise InstallError(f"{self.root} has no /usr/bin/python3 for the venv: install python3-venv")
        src = self.opts.venv_from.resolve()
        if chroot and not src.is_relative_to(self.root.resolve()):
            inside = f"{PREFIX}/src"
            self.change(
                f"copy {src} to {inside}",
                lambda: shutil.copytree(
                    src, self.path(inside), ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__")
                ),
            )
            src_inside = inside
        else:
            src_inside = "/" + str(src.relative_to(self.root.resolve())) if chroot else str(src)
        flags = ["--system-site-packages"] if self.pi else []
        self.run(
            [*chroot, "/usr/bin/python3", "-m", "venv", *flags, VENV],
            f"python3 -m venv {' '.join(flags)} {VENV}",
        )
        self.run([*chroot, f"{VENV}/bin/pip", "install", src_inside], f"pip install {src_inside} into {VENV}")

    def systemd(self) -> None:
        if not self.opts.enable:
            return
        systemctl = shutil.which("systemctl")
        for unit in MASKED:
            self.symlink(f"/etc/systemd/system/{unit}", "/dev/null")
        missing = [
            u for u in UNITS if not self.path(f"/etc/systemd/system/multi-user.target.wants/{u}").is_symlink()
        ]
        if not missing:
            return
        if systemctl:
            # What `systemctl enable` would do on the device itself, also into an image.
            self.run(
                [systemctl, f"--root={self.root.resolve()}", "enable", *missing],
                f"systemctl --root={self.root} enable {' '.join(missing)}",
            )
            return
        for u in missing:  # every kiosk unit is WantedBy=multi-user.target
            self.symlink(f"/etc/systemd/system/multi-user.target.wants/{u}", f"/etc/systemd/system/{u}")

    def install(self) -> None:
        self.preflight()
        self.packages()
        self.users()
        self.directories()
        self.files()
        self.venv()
        self.raspberry_pi()
        self.systemd()


def _os_release(root: Path) -> dict[str, str]:
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = root / candidate
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            return {k: v.strip().strip('"') for k, v in re.findall(r"^([A-Z_]+)=(.*)$", text, flags=re.M)}
    return {}


def _account_tools() -> bool:
    return all(shutil.which(tool) for tool in ("groupadd", "useradd", "usermod"))


def _set_shell_vars(text: str, values: dict[str, str]) -> str:
    """``text`` (a shell-variable file such as /etc/default/console-setup) with each of ``values`` set,
    other lines kept."""
    lines = text.splitlines()
    for key, value in values.items():
        line = f'{key}="{value}"'
        for i, old in enumerate(lines):
            if re.match(rf"^\s*{key}=", old):
                lines[i] = line
                break
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


# --- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``kiosk provision install`` (also ``python -m provisioning.install``)."""
    parser.add_argument("--root", type=Path, default=Path("/"), help="the root to install into (default /)")
    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="install this kiosk.toml (checked with `kiosk config check` first)",
    )
    parser.add_argument(
        "--template",
        action="store_true",
        help="write a minimal kiosk.toml if there is none (else the first-boot wizard asks on tty1)",
    )
    parser.add_argument(
        "--pi",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a Raspberry Pi: system site-packages in the venv, large console font (default: detected)",
    )
    parser.add_argument(
        "--venv-from",
        type=Path,
        metavar="TREE",
        help=f"make {VENV} in ROOT and pip install this firmware tree or wheel into it",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=TREE,
        metavar="TREE",
        help="firmware tree with systemd/ (default: this one)",
    )
    parser.add_argument("--apt", action="store_true", help="apt-get install the Debian packages ROOT lacks")
    parser.add_argument(
        "--no-enable", dest="enable", action="store_false", help="install units, do not enable"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")


def options(args: argparse.Namespace) -> Options:
    return Options(
        root=args.root,
        config=getattr(args, "config", None) and Path(args.config),
        template=args.template,
        pi=args.pi,
        venv_from=args.venv_from,
        source=args.source,
        apt=args.apt,
        enable=args.enable,
        dry_run=args.dry_run,
    )


def main(args: argparse.Namespace) -> int:
    """Run ``kiosk provision install``; returns the exit status."""
    installer = Installer(options(args))
    try:
        installer.install()
    except InstallError as exc:
        print(f"kiosk provision install: {exc}", file=sys.stderr)
        return EXIT_USAGE if not installer.changes else EXIT_FAILED
    except OSError as exc:
        print(f"kiosk provision install: {exc}", file=sys.stderr)
        return EXIT_FAILED
    pi = " (Raspberry Pi)" if installer.pi else ""
    verb = "would change" if args.dry_run else "changed"
    summary = f"{len(installer.changes)} {verb}" if installer.changes else "nothing to change"
    print(f"{args.root}: kiosk installed{pi}: {summary}, {len(installer.warnings)} warning(s)")
    return EXIT_OK


def _parse(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kiosk provision install", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser.parse_args(None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main(_parse()))
