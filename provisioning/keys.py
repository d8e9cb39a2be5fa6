"""The device's key, its certificate signing request, and the checks on what the platform sends back.

The key is EC P-256, made on the device and never leaving it; the CSR names the device (CN = device id)
and its place (O = the county, OU = the village's full code path, ST/L = province and city names). The
platform signs it and the technician brings back the CA and the certificate; ``check_certificate``
proves they fit before anything is installed: the certificate holds this device's public key and id,
chains to the CA, and is valid now.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.errors import CertificateError, ProvisioningError
from provisioning.identity import Identity, RegionTable

MAX_PEM_BYTES = 256 * 1024


def new_device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_device_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The device key at ``path`` (PEM, unencrypted, EC P-256); raises ``ProvisioningError``."""
    try:
        key = serialization.load_pem_private_key(_read(path, "device key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ProvisioningError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ProvisioningError(f"{path}: the device key must be EC P-256")
    return key


def make_csr(
    key: ec.EllipticCurvePrivateKey, identity: Identity, regions: RegionTable
) -> x509.CertificateSigningRequest:
    """CN = device id; ST, L, O = province, city, county names; OU = the region path down to the village."""
    province, city, county = (regions.name(c) or c for c in identity.region[:3])
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, province),
            x509.NameAttribute(NameOID.LOCALITY_NAME, city),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, county),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "/".join(identity.region)),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.device_id),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_fingerprint(csr: x509.CertificateSigningRequest) -> str:
    """SHA-256 of the CSR's DER bytes, lowercase hex: what the platform's registry checks."""
    return hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True, slots=True)
class CheckedCertificate:
    """A certificate that fits this device, and the CA bundle it chains to, ready to install."""

    cert_pem: bytes
    ca_pem: bytes
    subject: str
    issuer: str
    not_after: dt.datetime


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ProvisioningError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ProvisioningError(f"{path}: the {what} is larger than {MAX_PEM_BYTES // 1024} KiB")
    return data


def _load_certs(path: Path, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertificateError(f"{path}: the {what} is not a PEM or DER X.509 certificate") from None


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_certificate(
    cert_path: Path,
    ca_path: Path,
    key: ec.EllipticCurvePrivateKey,
    device_id: str,
    *,
    now: dt.datetime | None = None,
) -> CheckedCertificate:
    """The certificate file (the device's, optionally followed by intermediates) and the CA file,
    checked against the device key and id. Raises ``CertificateError`` saying what does not fit."""
    now = now or dt.datetime.now(dt.UTC)
    chain = _load_certs(cert_path, "device certificate")
    cas = _load_certs(ca_path, "CA certificate")
    leaf = chain[0]
    problems = []
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        problems.append(
            f"{cert_path} is for another key, not this device's: it was signed for a different CSR "
            "(sign this device's CSR, see the QR code's fingerprint)"
        )
    cns = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns and cns[0] != device_id:
        problems.append(f"{cert_path} is issued to {cns[0]!r}, this device is {device_id!r}")
    for cert, what in [(c, f"{cert_path} ({c.subject.rfc4514_string()})") for c in chain] + [
        (c, f"the CA {ca_path} ({c.subject.rfc4514_string()})") for c in cas
    ]:
        if now < cert.not_valid_before_utc:
            problems.append(
                f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                "(check the kiosk's clock: date -u)"
            )
        if now > cert.not_valid_after_utc:
            problems.append(
                f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: ask the platform for a new one"
            )
    # Each certificate of the file is signed by the next; the last by one of the CA file's.
    for child, parent in zip(chain, chain[1:], strict=False):
        if not _signed_by(child, parent):
            problems.append(
                f"{cert_path}: {child.subject.rfc4514_string()} is not signed by the next certificate in the file"
            )
    top = chain[-1]
    if not any(_signed_by(top, ca) or _spki(top.public_key()) == _spki(ca.public_key()) for ca in cas):
        problems.append(
            f"{cert_path} was not signed by the CA in {ca_path} (issuer {top.issuer.rfc4514_string()}; "
            "bring the platform's CA that signed it)"
        )
    if problems:
        raise CertificateError(problems)
    return CheckedCertificate(
        cert_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        ca_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas),
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
    )
