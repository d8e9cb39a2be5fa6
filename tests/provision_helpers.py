"""A throw-away certificate authority for the provisioning tests: it signs a kiosk's CSR the way the
platform does, and can be told to sign badly (expired, for another key, by another CA)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REGION = "33,3308,330803,330803100,330803100201"


@dataclass
class PlatformCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, name: str = "County Platform CA") -> PlatformCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def sign(
        self,
        csr_path: Path,
        out: Path,
        *,
        days: float = 365,
        starts_days_ago: float = 1,
        public_key: object | None = None,
        common_name: str | None = None,
    ) -> Path:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
        subject = csr.subject
        if common_name is not None:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=starts_days_ago)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key or csr.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .sign(self.key, hashes.SHA256())
        )
        out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return out
