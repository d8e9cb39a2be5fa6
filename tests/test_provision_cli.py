"""``kiosk provision --non-interactive``: a scripted roll-out, and every way a technician's input can
be wrong (each refused with a clear error and nothing written)."""

from __future__ import annotations

import hashlib
import math
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance import config as appliance_config
from kiosk_cli.main import main as kiosk
from provisioning.identity import RegionTable, parse_broker
from provisioning.toml_writer import dumps
from tests.provision_helpers import REGION, PlatformCA

IDENTITY = [
    "--device-id", "kiosk-0001",
    "--name", "赤柯山村便民服务站",
    "--region", REGION,
    "--role", "main",
    "--broker", "mqtt.county.example:8883",
]  # fmt: skip


def provision(config: Path, *args: str) -> int:
    return kiosk(["provision", "--config", str(config), "--non-interactive", *IDENTITY, *args])


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def csr_made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Step 1 done: the key, the CSR and the QR code under tmp/etc (the config's directory)."""
    config = tmp_path / "etc" / "kiosk.toml"
    assert provision(config, "--csr-only", "--data-dir", str(tmp_path / "data")) == 0
    capsys.readouterr()
    return config


def test_a_scripted_roll_out_makes_the_key_and_csr_then_installs_the_signed_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "kiosk.toml"
    assert provision(config, "--csr-only") == 0
    out = capsys.readouterr().out
    etc = config.parent
    key, csr_path = etc / "keys" / "device.key", etc / "keys" / "device.csr"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not config.exists(), "--csr-only writes no config"
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    names = {a.oid: a.value for a in csr.subject}
    assert names[NameOID.COMMON_NAME] == "kiosk-0001"
    assert names[NameOID.ORGANIZATION_NAME] == "衢江区" and names[NameOID.STATE_OR_PROVINCE_NAME] == "浙江省"
    assert names[NameOID.ORGANIZATIONAL_UNIT_NAME] == REGION.replace(",", "/")
    assert (
        isinstance(csr.public_key(), ec.EllipticCurvePublicKey) and csr.public_key().curve.name == "secp256r1"
    )
    fingerprint = hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert f"CSR SHA-256 {fingerprint}" in out and "▀" in out  # the QR code in the terminal
    assert (etc / "keys" / "device-csr-qr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"sha256={fingerprint}" in out and (
        etc / "keys" / "device-csr-qr.svg"
    ).read_text().lstrip().startswith("<?xml")

    ca = PlatformCA.make()
    ca_file, cert_file = ca.write(tmp_path / "ca.pem"), ca.sign(csr_path, tmp_path / "kiosk-0001.pem")
    hardware = tmp_path / "room.toml"
    hardware.write_text('[drivers.gpio]\nbackend = "sim"\n', encoding="utf-8")
    key_before = key.read_bytes()
    assert provision(config, "--ca", str(ca_file), "--cert", str(cert_file), "--hardware", str(hardware)) == 0
    assert "valid until" in capsys.readouterr().out
    assert key.read_bytes() == key_before, "the key the platform signed for is kept"
    cfg = appliance_config.load(config)  # the appliance's own loader takes it
    assert cfg.device.id == "kiosk-0001" and cfg.device.region[-1] == "330803100201"
    assert (cfg.fleet.host, cfg.fleet.port) == ("mqtt.county.example", 8883)
    assert (
        cfg.fleet.tls is not None
        and cfg.fleet.tls.key == key
        and cfg.fleet.tls.cert == etc / "keys" / "device.pem"
    )
    assert cfg.drivers.gpio is not None and cfg.drivers.gpio.backend == "sim"
    assert (etc / "keys" / "device.pem").read_bytes() == cert_file.read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_missing_flags_exit_2_naming_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        kiosk(["provision", "--config", str(tmp_path / "k.toml"), "--non-interactive", "--device-id", "k1"])
        == 2
    )
    err = capsys.readouterr().err
    assert "missing --name, --region, --role, --broker, --ca, --cert" in err and "--csr-only" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--region", "33,3308,330803,33080310,330803100201", "township code '33080310' must be 9 digits"),
        ("--region", "33,3309,330903,330903100,330903100201", "city code 3309 is not in"),
        ("--region", "33,3308,110101,110101001,110101001001", "must start with its parent's code '3308'"),
        ("--region", "33,3308,330803", "region needs 5 codes"),
        ("--broker", "host:99999", "broker port '99999' must be a number 1-65535"),
        ("--broker", "mqtt.county.example", "must be host:port"),
        ("--device-id", "kiosk/0001", "device id 'kiosk/0001' must be"),
    ],
)
def test_bad_identity_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    args = list(IDENTITY)
    args[args.index(flag) + 1] = value
    code = kiosk(
        [
            "provision",
            "--config",
            str(tmp_path / "etc" / "kiosk.toml"),
            "--non-interactive",
            *args,
            "--csr-only",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "refused, nothing written" in err and expected in err
    assert not (tmp_path / "etc").exists()


def _signed(tmp_path: Path, config: Path, **sign: object) -> tuple[Path, Path]:
    ca = PlatformCA.make()
    return ca.write(tmp_path / "ca.pem"), ca.sign(
        config.parent / "keys" / "device.csr", tmp_path / "cert.pem", **sign
    )  # type: ignore[arg-type]


def _cert_for_another_key(tmp_path: Path, config: Path) -> tuple[Path, Path]:
    return _signed(tmp_path, config, public_key=ec.generate_private_key(ec.SECP256R1()).public_key())


def _expired(tmp_path: Path, config: Path) -> tuple[Path, Path]:
    return _signed(tmp_path, config, starts_days_ago=400, days=365)


def _other_ca(tmp_path: Path, config: Path) -> tuple[Path, Path]:
    ca_file, _ = _signed(tmp_path, config)
    impostor = PlatformCA.make("County Platform CA")  # same name, other key
    return ca_file, impostor.sign(config.parent / "keys" / "device.csr", tmp_path / "cert.pem")


def _other_device(tmp_path: Path, config: Path) -> tuple[Path, Path]:
    return _signed(tmp_path, config, common_name="kiosk-0002")


def _not_a_certificate(tmp_path: Path, config: Path) -> tuple[Path, Path]:
    ca_file, _ = _signed(tmp_path, config)
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    return ca_file, junk


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_cert_for_another_key, "is for another key, not this device's"),
        (_expired, "expired on"),
        (_other_ca, "was not signed by the CA in"),
        (_other_device, "is issued to 'kiosk-0002', this device is 'kiosk-0001'"),
        (_not_a_certificate, "is not a PEM or DER X.509 certificate"),
    ],
)
def test_a_certificate_that_does_not_fit_is_refused_and_nothing_is_written(
    tmp_path: Path, csr_made: Path, capsys: pytest.CaptureFixture[str], make, expected: str
) -> None:
    ca_file, cert_file = make(tmp_path, csr_made)
    before = files(csr_made.parent)
    assert provision(csr_made, "--ca", str(ca_file), "--cert", str(cert_file)) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert files(csr_made.parent) == before, "no certificate, CA or config written"


def test_a_hardware_section_the_appliance_refuses_is_caught_before_the_csr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hardware = tmp_path / "room.toml"
    hardware.write_text('[drivers.gpio]\nbackend = "pi"\nbuzzer = 99\n', encoding="utf-8")
    config = tmp_path / "etc" / "kiosk.toml"
    assert provision(config, "--csr-only", "--hardware", str(hardware)) == 2
    err = capsys.readouterr().err
    assert "the appliance would refuse this config: drivers.gpio.buzzer" in err
    assert not (tmp_path / "etc").exists()


def test_a_read_only_config_directory_is_refused_and_nothing_is_written(
    tmp_path: Path, csr_made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_file, cert_file = _signed(tmp_path, csr_made)
    etc = csr_made.parent
    before = files(etc)
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(etc), str(etc)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(etc)], check=True, capture_output=True)
        assert provision(csr_made, "--ca", str(ca_file), "--cert", str(cert_file)) == 2
        err = capsys.readouterr().err
        assert f"cannot write to {etc}" in err and "Read-only file system" in err
        assert files(etc) == before
    finally:
        subprocess.run(["umount", "-l", str(etc)], check=False)


def test_the_region_table_names_the_demo_and_test_regions() -> None:
    table = RegionTable.load()
    assert (
        table.describe(REGION.split(","))
        == "浙江省 33 / 衢州市 3308 / 衢江区 330803 / 上方镇 330803100 / 赤柯山村 330803100201"
    )
    assert table.name("330803100202")  # the other kiosk of the command tests
    assert [c for c, _ in table.children("3308")] == ["330802", "330803", "330881"]
    assert str(parse_broker("[fd00::1]:8883")) == "[fd00::1]:8883"


def test_the_toml_writer_writes_what_tomllib_reads_back() -> None:
    example = tomllib.loads(
        (Path(__file__).parent.parent / "docs" / "kiosk.example.toml").read_text(encoding="utf-8")
    )
    example["drivers"] = {
        "camera": {"room_main": {"backend": "v4l2", "device": "/dev/v4l/by-id/usb-x-video-index0"}},
        "switcher": {"ascii": {"suffix": "\r\n", "route_reply": r"^(?P<input>\d+)B(?P<output>\d+) OK$"}},
    }
    example["quoted key"] = {"名字": 'say "hi"\\\t', "list": [1, 2.5, True, "x"], "empty": []}
    example["tables"] = [{"a": 1}, {"b": {"c": 2}}]
    assert tomllib.loads(dumps(example)) == example
    with pytest.raises(TypeError, match="NaN|nan"):
        dumps({"x": {"y": math.nan}})
    with pytest.raises(TypeError, match="cannot write"):
        dumps({"x": {"y": object()}})


def test_the_device_key_is_never_readable_by_others(csr_made: Path) -> None:
    key = csr_made.parent / "keys" / "device.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
