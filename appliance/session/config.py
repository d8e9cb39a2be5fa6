"""``[session]``: the service session (catalog, idle timeout, technician PIN, call and appointment options).

Every field has a default so a config without the section validates. The technician PIN is stored only
as a salted PBKDF2 hash; ``python -m appliance.session.config hash-pin`` makes one.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kiosk_core.config import Strict

PIN_ALGORITHM = "pbkdf2_sha256"
PIN_ITERATIONS = 200_000
FACTORY_PIN = "123456"
# The factory PIN's hash (salt fixed so the default is reproducible). A kiosk still using it reports it on
# the technician screen and in the session health, so an installer is told to set their own.
FACTORY_PIN_HASH = (
    "pbkdf2_sha256$200000$6b696f736b2d666163746f72792d70696e$"
    "a6ac2ad5d5e678d2296b5223caf68cd20dde05fc9b75b67fa067932333c58dac"
)


def hash_pin(pin: str, *, salt: bytes | None = None, iterations: int = PIN_ITERATIONS) -> str:
    """``pbkdf2_sha256$iterations$salt_hex$hash_hex`` for ``pin`` (a fresh random salt unless given)."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"{PIN_ALGORITHM}${iterations}${salt.hex()}${digest.hex()}"


def parse_pin_hash(value: str) -> tuple[int, bytes, bytes]:
    """Split a PIN hash into (iterations, salt, digest); ``ValueError`` says what is wrong."""
    parts = value.split("$")
    if len(parts) != 4 or parts[0] != PIN_ALGORITHM:
        raise ValueError(
            f"must look like {PIN_ALGORITHM}$ITERATIONS$SALT_HEX$HASH_HEX "
            "(make one with: python -m appliance.session.config hash-pin)"
        )
    try:
        iterations = int(parts[1])
        salt, digest = bytes.fromhex(parts[2]), bytes.fromhex(parts[3])
    except ValueError:
        raise ValueError("iterations must be an integer and salt/hash hexadecimal") from None
    if not 1_000 <= iterations <= 10_000_000 or len(salt) < 8 or len(digest) != 32:
        raise ValueError("needs 1000..10000000 iterations, a salt of >= 8 bytes and a 32-byte SHA-256 hash")
    return iterations, salt, digest


def check_pin(pin: str, pin_hash: str) -> bool:
    """Constant-time check of ``pin`` against a stored hash."""
    iterations, salt, digest = parse_pin_hash(pin_hash)
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations), digest)


class SessionConfig(Strict):
    idle_timeout_s: float = Field(
        90.0, ge=20, le=3600, description="end an unattended session after this long"
    )
    idle_warning_s: float = Field(15.0, ge=3, le=120, description="visible countdown before the idle timeout")
    ended_hold_s: float = Field(6.0, ge=1, le=60, description="how long the 'ended' screen shows")
    heartbeat_s: float = Field(5.0, ge=0.5, le=60, description="the session state is republished this often")
    default_lang: Literal["zh-CN", "en"] = "zh-CN"
    technician_pin_hash: str = Field(
        FACTORY_PIN_HASH, description="pbkdf2_sha256$iterations$salt_hex$hash_hex"
    )
    pin_digits: int = Field(6, ge=4, le=12)
    pin_attempts: int = Field(3, ge=1, le=10, description="wrong PINs before the lockout")
    pin_lockout_s: float = Field(300.0, ge=10, le=86400)
    technician_idle_s: float = Field(120.0, ge=10, le=3600)
    pin_idle_s: float = Field(
        30.0,
        ge=5,
        le=600,
        description="the PIN pad goes back to where it was opened after this long untouched",
    )
    catalog_path: Path | None = Field(None, description="catalog file to use instead of the shipped default")
    call_wait_timeout_s: float = Field(600.0, ge=10, le=7200, description="then the call shows 'no answer'")
    platform_timeout_s: float = Field(20.0, ge=1, le=600, description="wait for progress/appointment answers")
    receipt_url_template: str = Field(
        "https://zwfw.example.gov.cn/progress?no={application_no}",
        max_length=400,
        description="QR text when the clerk gives none",
    )
    doc_chunk_max: int = Field(131072, ge=1024, le=1 << 20, description="largest session.document.get chunk")
    max_document_bytes: int = Field(16 << 20, ge=1024, le=256 << 20)
    max_messages: int = Field(50, ge=1, le=500, description="clerk messages kept on screen")

    @field_validator("technician_pin_hash")
    @classmethod
    def _pin_hash(cls, v: str) -> str:
        parse_pin_hash(v)
        return v

    @field_validator("receipt_url_template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(application_no="X")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may use only the placeholder {application_no}") from None
        return v

    @model_validator(mode="after")
    def _warning_shorter(self) -> SessionConfig:
        if self.idle_warning_s >= self.idle_timeout_s:
            raise ValueError(
                f"idle_warning_s ({self.idle_warning_s}) must be shorter than "
                f"idle_timeout_s ({self.idle_timeout_s})"
            )
        return self

    @property
    def pin_is_default(self) -> bool:
        return check_pin(FACTORY_PIN, self.technician_pin_hash)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.session.config", description="session configuration helpers"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("hash-pin", help="print technician_pin_hash for a PIN (read from the terminal)")
    p.add_argument("--pin", help="the PIN (default: ask without echo)")
    args = parser.parse_args(argv)
    pin = args.pin or getpass.getpass("technician PIN: ")
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        print("a PIN is 4 to 12 digits", file=sys.stderr)
        return 1
    print(f'technician_pin_hash = "{hash_pin(pin)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
