"""The provisioning steps, shared by the wizard and ``kiosk provision --non-interactive``.

1. ``write_csr``: the device key (made once, kept; ``new_key`` replaces it) and its CSR, plus the QR
   code of the device id and the CSR's SHA-256 for the platform's registry.
2. ``install``: the CA and the signed certificate checked against the key, the config built and
   validated by the appliance's own loader, then the certificate, the CA and ``kiosk.toml`` written.

Every check runs before the first byte is written (including a probe that each target directory
takes a file), so a refused step leaves the disk as it was. Files are written with
``kiosk_core.fsutil.write_atomic``: the key and the config 0600 (the config may hold the fleet
password and the technician PIN's hash), the certificates 0644.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import config as appliance_config
from kiosk_core.config import merge, read_toml
from kiosk_core.errors import ConfigError
from kiosk_core.fsutil import write_atomic
from provisioning import keys, qr, toml_writer
from provisioning.errors import NotWritable, ProvisioningError
from provisioning.identity import Identity, RegionTable


@dataclass(frozen=True, slots=True)
class Paths:
    """Where provisioning writes: the config file and the TLS files it names (``fleet.tls``)."""

    config: Path
    key: Path
    cert: Path
    ca: Path

    @property
    def csr(self) -> Path:
        return self.key.with_suffix(".csr")

    @property
    def qr_stem(self) -> Path:
        return self.key.with_name(self.key.stem + "-csr-qr")

    @classmethod
    def for_config(cls, config: Path, existing: dict[str, Any] | None = None) -> Paths:
        """The TLS paths of an existing config's ``[fleet.tls]``, else ``device.key``, ``device.pem``
        and ``ca.pem`` in ``keys/`` beside the config file (``/etc/kiosk/keys``, 0700 kiosk, made by
        ``kiosk provision install``)."""
        tls = ((existing or {}).get("fleet") or {}).get("tls") or {}
        base = config.parent / "keys"

        def pick(key: str, default: str) -> Path:
            value = tls.get(key)
            return Path(value) if isinstance(value, str) and value else base / default

        return cls(
            config=config,
            key=pick("key", "device.key"),
            cert=pick("cert", "device.pem"),
            ca=pick("ca", "ca.pem"),
        )


def existing_config(path: Path) -> dict[str, Any]:
    """The config file's tables if it exists and is TOML (its sections are kept: drivers, media, ...);
    ``{}`` when there is none. A file that is not TOML is a ``ProvisioningError``."""
    if not path.exists():
        return {}
    try:
        return read_toml(path)
    except ConfigError as exc:
        raise ProvisioningError([f"the existing config cannot be read: {p}" for p in exc.problems]) from None


def probe_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be made in it; raises ``NotWritable``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kiosk-provision-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise NotWritable(
            f"cannot write to {directory}: {exc.strerror or exc} (is the filesystem read-only? "
            "mount -o remount,rw, or choose another --config)"
        ) from None


@dataclass(frozen=True, slots=True)
class CsrResult:
    csr_path: Path
    key_path: Path
    fingerprint: str
    qr_text: str
    qr_png: Path
    qr_svg: Path
    key_created: bool

    def qr_blocks(self) -> str:
        return qr.half_blocks(qr.make(self.qr_text))


SERVICE_USER = "kiosk"


def service_owner() -> tuple[int, int]:
    """(uid, gid) of the ``kiosk`` user the services run as, when running as root and it exists (the
    wizard at first boot): the device key must be the appliance's to read. (-1, -1) otherwise."""
    import pwd

    if os.geteuid() != 0:
        return -1, -1
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return -1, -1
    return entry.pw_uid, entry.pw_gid


def write_csr(identity: Identity, paths: Paths, regions: RegionTable, *, new_key: bool = False) -> CsrResult:
    """Make (or reuse) the device key, write the CSR and its QR code. A key that exists is kept unless
    ``new_key``: a certificate the platform already signed for it stays usable."""
    for directory in {paths.key.parent, paths.csr.parent}:
        probe_writable(directory)
    created = new_key or not paths.key.exists()
    key = keys.new_device_key() if created else keys.load_device_key(paths.key)
    csr = keys.make_csr(key, identity, regions)
    fingerprint = keys.csr_fingerprint(csr)
    text = qr.payload(identity.device_id, fingerprint)
    if created:
        uid, gid = service_owner()
        write_atomic(paths.key, keys.key_pem(key), mode=0o600, uid=uid, gid=gid)
    write_atomic(paths.csr, keys.csr_pem(csr))
    os.chmod(paths.csr, 0o644)
    png, svg = qr.save(qr.make(text), paths.qr_stem)
    return CsrResult(paths.csr, paths.key, fingerprint, text, png, svg, created)


def build_config(
    identity: Identity,
    paths: Paths,
    *,
    base: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    tls: bool = True,
) -> dict[str, Any]:
    """The config's tables: ``base`` (the existing file), then ``hardware`` (a TOML fragment with the
    room's ``[drivers.*]``, ``[media]``, ...), then what provisioning owns: ``[device]``, the broker and
    its TLS files in ``[fleet]``, and ``storage.data_dir`` when given."""
    data = merge(base or {}, hardware or {})
    data["device"] = {
        "id": identity.device_id,
        "name": identity.name,
        "role": identity.role,
        "region": list(identity.region),
    }
    fleet = dict(data.get("fleet") or {})
    fleet["host"], fleet["port"] = identity.broker.host, identity.broker.port
    if tls:
        fleet["tls"] = {
            **(fleet.get("tls") or {}),
            "ca": str(paths.ca),
            "cert": str(paths.cert),
            "key": str(paths.key),
        }
    data["fleet"] = fleet
    if data_dir is not None:
        data["storage"] = {**(data.get("storage") or {}), "data_dir": str(data_dir)}
    return data


def render_config(data: dict[str, Any], source: str) -> tuple[str, appliance_config.KioskConfig]:
    """The TOML text and the appliance's own reading of it: the text is parsed back and validated, so
    what is written is exactly what the appliance accepts. Raises ``ProvisioningError``."""
    try:
        text = "# written by `kiosk provision`; check with `kiosk config check`\n" + toml_writer.dumps(data)
    except TypeError as exc:
        raise ProvisioningError(f"the config cannot be written as TOML: {exc}") from None
    try:
        cfg = appliance_config.parse(tomllib.loads(text), source)
    except ConfigError as exc:
        raise ProvisioningError(
            [f"the appliance would refuse this config: {p}" for p in exc.problems], code="provision.config"
        ) from None
    return text, cfg


@dataclass(frozen=True, slots=True)
class InstallResult:
    config: Path
    cert: keys.CheckedCertificate | None
    text: str


def install(
    identity: Identity,
    paths: Paths,
    *,
    cert_file: Path | None,
    ca_file: Path | None,
    base: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
    data_dir: Path | None = None,
) -> InstallResult:
    """Check the certificate and the CA (when given) against the device key, build and validate the
    config, then write the certificate, the CA and the config (in that order: the config that names
    the files comes last). Raises before writing anything when something does not fit."""
    checked = None
    if cert_file is not None or ca_file is not None:
        if cert_file is None or ca_file is None:
            raise ProvisioningError("the CA and the device certificate go together (--ca FILE --cert FILE)")
        if not paths.key.exists():
            raise ProvisioningError(
                f"no device key at {paths.key}: make the key and the CSR first (kiosk provision --csr-only ...)"
            )
        key = keys.load_device_key(paths.key)
        checked = keys.check_certificate(cert_file, ca_file, key, identity.device_id)
    data = build_config(
        identity, paths, base=base, hardware=hardware, data_dir=data_dir, tls=checked is not None
    )
    text, _cfg = render_config(data, str(paths.config))
    targets = {paths.config.parent} | ({paths.cert.parent, paths.ca.parent} if checked else set())
    for directory in targets:
        probe_writable(directory)
    if checked is not None:
        assert cert_file is not None and ca_file is not None
        for path, source, pem in (
            (paths.cert, cert_file, checked.cert_pem),
            (paths.ca, ca_file, checked.ca_pem),
        ):
            uid, gid = service_owner()
            if not (path.exists() and path.resolve() == source.resolve()):  # already in place: keep it
                write_atomic(path, pem, mode=0o644, uid=uid, gid=gid)
            os.chmod(path, 0o644)
    uid, gid = service_owner()
    if gid != -1:  # root:kiosk 0640, as `kiosk provision install` lays /etc/kiosk out
        write_atomic(paths.config, text.encode("utf-8"), mode=0o640, uid=0, gid=gid)
    else:
        write_atomic(paths.config, text.encode("utf-8"))
        with contextlib.suppress(OSError):
            os.chmod(paths.config, 0o600)
    return InstallResult(paths.config, checked, text)
