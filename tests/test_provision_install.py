"""`kiosk provision install` and the systemd units it lays down: checked by systemd's own tools
(`systemd-analyze verify` and `security`), by the passwd package's own checkers (`pwck`, `grpck`), and
by an install into a fresh Debian 12 root made with debootstrap."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning import install
from provisioning.install import AccountFiles, Accounts, Installer, InstallError, Options

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
CACHE = Path("/var/cache/kiosk-tests")
#: Packages a kiosk root has besides minbase (libpam-systemd: polkitd needs a logind).
INCLUDE = "systemd,libpam-systemd,dbus,polkitd,mosquitto,python3-venv,console-setup"
TARBALL = CACHE / "bookworm-minbase-kiosk.tgz"
ROOT_TAR = CACHE / "bookworm-minbase-kiosk-root.tar"
MIRROR = "http://deb.debian.org/debian"
#: Char-device classes (the names in /proc/devices) the units may grant, each registered by Linux as:
KNOWN_CLASSES = {
    "ttyUSB": "usb-serial (188)",
    "ttyACM": "cdc-acm (166)",
    "ttyAMA": "amba-pl011, the Pi's UARTs (204)",
    "gpiochip": "gpiolib's character device",
    "usb_device": "usbfs, /dev/bus/usb/*/*",
    "video4linux": "V4L2, /dev/video* and /dev/v4l-subdev* (81)",
    "media": "the media controller, /dev/media*",
    "dma_heap": "DMA-BUF heaps, /dev/dma_heap/*",
    "alsa": "ALSA, /dev/snd/* (116)",
    "drm": "DRM/KMS, /dev/dri/* (226)",
}
#: Directories under /dev that look like devices; systemd cannot put a directory in a device ACL.
DEV_DIRECTORIES = {
    "/dev/dma_heap",
    "/dev/dri",
    "/dev/snd",
    "/dev/bus/usb",
    "/dev/v4l",
    "/dev/input",
    "/dev/serial",
}


def directives(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, in order, by key."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def unit_root(tmp: Path) -> Path:
    """A root where every ExecStart of the units exists (stubs) and systemd's own units are there."""
    root = tmp / "units-root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for exe in ("opt/kiosk/.venv/bin/kiosk", "usr/sbin/mosquitto", "bin/sh", "bin/systemctl"):
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        (root / exe).write_text("#!/bin/sh\n")
        (root / exe).chmod(0o755)
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    return root


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
    reason="systemd-analyze and systemd's units are not installed here",
)


def verify(root: Path, unit: str) -> str:
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root / "etc/systemd/system",
    )
    return (done.stdout + done.stderr).strip() + (
        "" if done.returncode == 0 else f" (exit {done.returncode})"
    )


def exposure(root: Path, unit: str) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert found, done.stdout[-500:] + done.stderr
    return float(found.group(1))


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing_in_any_unit(tmp_path: Path):
    root = unit_root(tmp_path)
    # A unit with a real mistake speaks up, so a quiet verify means something.
    (root / "etc/systemd/system/typo.service").write_text(
        "[Service]\nExecStart=/bin/kill\nProtectSystem=sometimes\n"
    )
    assert "protect system" in verify(root, "typo.service")
    for unit in install.UNITS:
        assert verify(root, unit) == "", unit


@needs_systemd_analyze
def test_the_appliance_exposure_is_at_most_4_and_no_unit_is_exposed(tmp_path: Path):
    root = unit_root(tmp_path)
    figures = {unit: exposure(root, unit) for unit in install.UNITS}
    assert figures["kiosk-appliance.service"] <= 4.0, figures
    # The first-boot wizard is root and interactive (it writes /etc/kiosk): MEDIUM, never EXPOSED.
    assert all(v < 7.0 for v in figures.values()), figures


def test_device_acls_name_device_classes_or_nodes_never_directories():
    for unit in sorted(UNITS.glob("*.service")):
        d = directives(unit)
        for entry in d.get("DeviceAllow", []):
            spec = entry.split()[0]
            if spec.startswith("char-"):
                assert spec[5:] in KNOWN_CLASSES, f"{unit.name}: {spec} is no Linux char-device class"
            else:
                assert spec.startswith("/dev/") and spec not in DEV_DIRECTORIES, f"{unit.name}: {spec}"
                if os.path.exists(spec):
                    assert stat.S_ISCHR(os.stat(spec).st_mode) or stat.S_ISBLK(os.stat(spec).st_mode), spec
        if "DeviceAllow" in d:
            assert d["DevicePolicy"] == ["closed"], unit.name


def test_lgpio_gets_a_writable_working_dir_in_the_appliance_unit():
    d = directives(UNITS / "kiosk-appliance.service")
    env = dict(
        w.split("=", 1) for value in d["Environment"] for w in re.findall(r'(?:[^\s"]|"[^"]*")+', value)
    )
    assert env["LG_WD"] == "/run/" + d["RuntimeDirectory"][0]
    assert d["ProtectSystem"] == ["strict"] and d["WorkingDirectory"] == ["/var/lib/kiosk"]
    assert d["StateDirectory"] == ["kiosk"]


def test_every_kiosk_unit_is_hardened_and_shares_the_state_dir_mode():
    for name in ("kiosk-appliance.service", "kiosk-media.service", "kiosk-ui.service"):
        d = directives(UNITS / name)
        assert d["User"] == ["kiosk"] and d["NoNewPrivileges"] == ["yes"], name
        assert d["ProtectSystem"] == ["strict"] and d["PrivateTmp"] == ["yes"], name
        assert d["CapabilityBoundingSet"] == [""], name
        assert d.get("StateDirectoryMode", ["0700"]) == ["0700"], name
    appliance = directives(UNITS / "kiosk-appliance.service")
    assert appliance["Type"] == ["notify"] and appliance["Restart"] == ["on-failure"]
    assert "sudo" not in " ".join(appliance["Environment"])  # NoNewPrivileges: the reboot goes via polkit
    ui = directives(UNITS / "kiosk-ui.service")
    assert ui["TTYPath"] == ["/dev/tty1"] and ui["StandardInput"] == ["tty"]
    assert "getty@tty1.service" in ui["Conflicts"]
    first = directives(UNITS / "kiosk-firstboot.service")
    assert first["ConditionPathExists"] == ["!/etc/kiosk/kiosk.toml"]
    assert "kiosk-appliance.service" in first["Before"][0].split()


def test_the_local_bus_config_is_loopback_only_and_persistent():
    install.check_local_bus_config((REPO / "provisioning/mosquitto-local.conf").read_text(), "shipped")
    with pytest.raises(InstallError, match="not bound to loopback"):
        install.check_local_bus_config("listener 1883 0.0.0.0\npersistence true\n", "bad")
    with pytest.raises(InstallError, match="no `listener`"):
        install.check_local_bus_config("persistence true\n", "bad")
    with pytest.raises(InstallError, match="persistence true"):
        install.check_local_bus_config("listener 1883 127.0.0.1\n", "bad")


# --- a small Debian-like root -------------------------------------------------------------------------


def fake_root(tmp: Path) -> Path:
    """The account files of a fresh Debian 12 (base-passwd's static entries), nothing else."""
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/debian_version").write_text("12.0\n")
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (root / "etc/hostname").write_text("kiosk-0042\n")
    users = ["root:x:0:0:root:/root:/bin/bash", "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin"]
    users += ["nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"]
    groups = ["root:x:0:", "daemon:x:1:", "tty:x:5:", "dialout:x:20:", "audio:x:29:", "video:x:44:"]
    groups += ["plugdev:x:46:", "shadow:x:42:", "nogroup:x:65534:"]
    (root / "etc/passwd").write_text("".join(u + "\n" for u in users))
    (root / "etc/group").write_text("".join(g + "\n" for g in groups))
    (root / "etc/shadow").write_text("".join(u.split(":")[0] + ":*:19000:0:99999:7:::\n" for u in users))
    (root / "etc/gshadow").write_text("".join(g.split(":")[0] + ":*::\n" for g in groups))
    for home in ("root", "usr/sbin", "var/lib/kiosk"):  # pwck checks homes and shells exist
        (root / home).mkdir(parents=True, exist_ok=True)
    for shell in ("bin/bash", "usr/sbin/nologin"):
        (root / shell).parent.mkdir(parents=True, exist_ok=True)
        (root / shell).write_text("")
    os.chmod(root / "etc/shadow", 0o640)
    os.chmod(root / "etc/gshadow", 0o640)
    shutil.copy("/etc/login.defs", root / "etc/login.defs") if Path("/etc/login.defs").exists() else None
    return root


def tree(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = (
            p.read_bytes()
            if p.is_file() and not p.is_symlink()
            else os.fsencode(str(p.readlink()))
            if p.is_symlink()
            else b""
        )
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
needs_pwck = pytest.mark.skipif(shutil.which("pwck") is None, reason="the passwd package is not installed")


@needs_root
@needs_pwck
def test_direct_account_edits_pass_pwck_and_grpck_and_match_useradd(tmp_path: Path):
    direct = fake_root(tmp_path / "direct")
    files = AccountFiles(direct)
    for group in ("gpio", "render"):
        files.add_group(group)
    uid = files.add_user("kiosk", "/var/lib/kiosk", "/usr/sbin/nologin")
    for group in install.DEVICE_GROUPS:
        files.add_member(group, "kiosk")
    files.add_member("video", "kiosk")  # a second time changes nothing
    for check in (["pwck", "-r", "-R", str(direct)], ["grpck", "-r", "-R", str(direct)]):
        done = subprocess.run(check, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (check, done.stdout, done.stderr)
    accounts = Accounts(direct)
    assert accounts.uid("kiosk") == uid and 100 <= uid <= 999
    assert all("kiosk" in accounts.members(g) for g in install.DEVICE_GROUPS)
    assert (
        accounts.members("video") == {"kiosk"}
        and "kiosk:!::kiosk" not in (direct / "etc/gshadow").read_text()
    )
    assert stat.S_IMODE((direct / "etc/shadow").stat().st_mode) == 0o640
    # The passwd package's tools, on the same root, pick the same ids.
    if shutil.which("useradd"):
        tools = fake_root(tmp_path / "tools")
        r = ["--root", str(tools)]
        for group in ("gpio", "render"):
            subprocess.run(["groupadd", *r, "--system", group], check=True, timeout=30)
        subprocess.run(["useradd", *r, "--system", "--user-group", "kiosk"], check=True, timeout=30)
        theirs, ours = Accounts(tools), accounts
        assert (theirs.uid("kiosk"), theirs.gid("gpio"), theirs.gid("render")) == (
            ours.uid("kiosk"),
            ours.gid("gpio"),
            ours.gid("render"),
        )


@needs_root
def test_a_dry_run_changes_nothing_and_a_second_install_nothing_more(tmp_path: Path):
    root = fake_root(tmp_path)
    before = tree(root)
    lines: list[str] = []
    dry = Installer(Options(root=root, source=REPO, dry_run=True, pi=False), out=lines.append)
    dry.install()
    assert tree(root) == before
    assert any(line.startswith("would useradd") or "would add system user" in line for line in lines)
    first = Installer(Options(root=root, source=REPO, pi=False), out=lambda _: None)
    first.install()
    assert len(first.changes) >= len(dry.changes) - 1  # the dry run could not know the user's groups yet
    again = Installer(Options(root=root, source=REPO, pi=False), out=lambda _: None)
    again.install()
    assert again.changes == []
    # Somebody loosened a directory: the next run puts it back, and only that.
    os.chmod(root / "etc/kiosk", 0o755)
    fix = Installer(Options(root=root, source=REPO, pi=False), out=lambda _: None)
    fix.install()
    assert fix.changes == ["chmod 0750 /etc/kiosk"]


@needs_root
def test_on_a_pi_the_venv_sees_apt_packages_and_the_console_is_large_print(tmp_path: Path):
    root = fake_root(tmp_path)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    venv = root / "opt/kiosk/.venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/kiosk").write_text("#!/bin/sh\n")
    (venv / "pyvenv.cfg").write_text(
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n"
    )
    (root / "etc/default").mkdir()
    (root / "etc/default/console-setup").write_text('ACTIVE_CONSOLES="/dev/tty[1-6]"\nFONTFACE="Fixed"\n')
    installer = Installer(Options(root=root, source=REPO), out=lambda _: None)
    assert installer.pi
    installer.install()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    console = (root / "etc/default/console-setup").read_text()
    assert 'FONTFACE="Terminus"' in console and 'FONTSIZE="16x32"' in console and "ACTIVE_CONSOLES" in console
    assert "Fixed" not in console
    assert not Installer(Options(root=root, source=REPO, pi=False), out=lambda _: None).pi or False


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioning.install", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_refuses_a_root_that_is_not_debian_and_a_config_the_kiosk_rejects(tmp_path: Path):
    other = tmp_path / "other"
    (other / "etc").mkdir(parents=True)
    (other / "etc/os-release").write_text("ID=fedora\n")
    done = run_install("--root", str(other), "--dry-run")
    assert done.returncode == 2 and "not a Debian-like root" in done.stderr
    root = fake_root(tmp_path)
    bad = tmp_path / "kiosk.toml"
    bad.write_text(
        '[device]\nid = "k1"\nname = "x"\nrole = "maim"\nregion = ["33","3308","330803","330803100","330803100201"]\n'
    )
    done = run_install("--root", str(root), "--config", str(bad))
    assert done.returncode == 2 and "device.role = 'maim'" in done.stderr
    assert not (root / "etc/kiosk").exists()


# --- into a fresh Debian 12 ----------------------------------------------------------------------------


def debootstrap(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = ["debootstrap", "--variant=minbase", f"--include={INCLUDE}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def bookworm_root_tar() -> Path:
    """A fresh minbase bookworm with the kiosk's packages, as a tar of the finished root in
    /var/cache/kiosk-tests: made once (debootstrap's own --make-tarball, then --unpack-tarball, which
    configures the packages: one to five minutes on a loaded 2-core machine), then extracted in seconds."""
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("debootstrap (as root) is needed for the install test")
    if ROOT_TAR.exists():
        return ROOT_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / "make"
    shutil.rmtree(work, ignore_errors=True)
    try:
        if not TARBALL.exists():
            part = TARBALL.with_suffix(".part")
            done = debootstrap(f"--make-tarball={part}", "bookworm", str(work), MIRROR, timeout=900)
            shutil.rmtree(work, ignore_errors=True)
            if done.returncode != 0:
                pytest.skip(
                    f"debootstrap could not fetch bookworm from {MIRROR} (no network?): {done.stderr[-300:]}"
                )
            part.rename(TARBALL)
        done = debootstrap(f"--unpack-tarball={TARBALL}", "bookworm", str(work), MIRROR, timeout=900)
        assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]
        part = ROOT_TAR.with_suffix(".part")
        subprocess.run(
            ["tar", "-C", str(work), "--numeric-owner", "-cf", str(part), "."], check=True, timeout=300
        )
        part.rename(ROOT_TAR)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ROOT_TAR


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_into_a_fresh_debian_root(bookworm_root_tar: Path, tmp_path: Path):
    root = tmp_path / "bookworm"
    root.mkdir()
    started = time.monotonic()
    subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "-xpf", str(bookworm_root_tar)], check=True, timeout=300
    )
    unpacked = time.monotonic()
    config = tmp_path / "kiosk.toml"
    config.write_text(
        '[device]\nid = "kiosk-0042"\nname = "赤柯山村便民服务站"\n'
        'region = ["33", "3308", "330803", "330803100", "330803100201"]\n'
    )
    first = run_install("--root", str(root), "--config", str(config), "--no-pi")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "kiosk installed" in first.stdout
    print(f"fresh root {unpacked - started:.0f} s, install {time.monotonic() - unpacked:.1f} s")

    # The kiosk user, as ROOT's own files say, in its device groups.
    accounts = Accounts(root)
    uid = accounts.uid("kiosk")
    assert 100 <= uid <= 999 and accounts.passwd["kiosk"][5:7] == ["/var/lib/kiosk", "/usr/sbin/nologin"]
    assert all("kiosk" in accounts.members(g) for g in install.DEVICE_GROUPS)
    assert subprocess.run(["pwck", "-r", "-R", str(root)], capture_output=True, timeout=30).returncode in (
        0,
        2,
    )
    assert subprocess.run(["grpck", "-r", "-R", str(root)], capture_output=True, timeout=30).returncode == 0

    def mode_owner(path: str) -> tuple[str, int, int]:
        st = (root / path.lstrip("/")).stat()
        return f"{stat.S_IMODE(st.st_mode):04o}", st.st_uid, st.st_gid

    kiosk_gid = accounts.gid("kiosk")
    assert mode_owner("/etc/kiosk") == ("0750", 0, kiosk_gid)
    assert mode_owner("/etc/kiosk/keys") == ("0700", uid, kiosk_gid)
    assert mode_owner("/etc/kiosk/kiosk.toml") == ("0640", 0, kiosk_gid)
    assert mode_owner("/var/lib/kiosk") == ("0700", uid, kiosk_gid)
    assert mode_owner("/var/lib/kiosk/recordings") == ("0700", uid, kiosk_gid)
    assert (root / "etc/kiosk/kiosk.toml").read_bytes() == config.read_bytes()

    # Units in place and enabled the way `systemctl enable` does; Debian's broker and tty1's getty masked.
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in install.UNITS:
        assert (root / "etc/systemd/system" / unit).read_bytes() == (UNITS / unit).read_bytes()
        assert os.readlink(wants / unit) == f"/etc/systemd/system/{unit}"
    assert os.readlink(root / "etc/systemd/system/mosquitto.service") == "/dev/null"
    assert os.readlink(root / "etc/systemd/system/getty@tty1.service") == "/dev/null"

    # The local bus: loopback only, persistent, readable by ROOT's mosquitto user.
    bus = (root / "etc/kiosk-mosquitto/mosquitto.conf").read_text()
    assert [line for line in bus.splitlines() if line.startswith("listener")] == ["listener 1883 127.0.0.1"]
    assert (
        "persistence true" in bus.splitlines()
        and mode_owner("/etc/kiosk-mosquitto/mosquitto.conf")[0] == "0644"
    )
    assert 'subject.user == "kiosk"' in (root / "etc/polkit-1/rules.d/50-kiosk-reboot.rules").read_text()

    # systemd of ROOT itself accepts the units (the venv is a stub: ROOT has no network for pip here).
    stub = root / "opt/kiosk/.venv/bin/kiosk"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    for unit in install.UNITS:
        assert verify(root, unit) == "", unit
    assert exposure(root, "kiosk-appliance.service") <= 4.0

    again = run_install("--root", str(root), "--config", str(config), "--no-pi")
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout
