"""Captured document images of the running session, encrypted at rest and wiped with the session.

Each session gets a random AES-256 key that exists only in this process's memory. An image is split
into segments of ``SEGMENT`` bytes, each sealed with AES-GCM under its own random nonce and with the
session, document, segment index and total length as associated data (so segments cannot be swapped,
reordered or the file truncated unnoticed). A chunk read for the platform decrypts only the segments it
touches. Wiping a session deletes its files and drops the key; files left behind by a crash or power cut
cannot be decrypted by anyone and are deleted at the next start (crypto-shredding).

Every method that touches the disk or encrypts is blocking: the session service calls them in worker
threads (``appliance.session.service.off_loop``), never on the event loop that carries the fleet link.

File layout of ``{root}/{session_id}/{doc_id}.bin`` (and ``.pending`` before the villager accepts it)::

    b"KSD1" | segment size (u32 BE) | total length (u64 BE) | sha256 of the plaintext (32 bytes)
    then per segment: nonce (12) | ciphertext + tag (len + 16)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from appliance.session.errors import DocumentStoreError

MAGIC = b"KSD1"
HEADER = struct.Struct(">4sIQ32s")
SEGMENT = 64 * 1024
NONCE = 12
TAG = 16
_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def sniff_mime(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"%PDF"):
        return "application/pdf"
    return "application/octet-stream"


@dataclass(frozen=True)
class Sealed:
    """An encrypted image ready to be written (no plaintext inside)."""

    session_id: str
    doc_id: str
    blob: bytes
    sha256: str
    size: int
    mime: str

    @property
    def meta(self) -> dict[str, object]:
        return {"sha256": self.sha256, "bytes": self.size, "mime": self.mime}


class DocumentStore:
    """Encrypted per-session document images under ``root``."""

    def __init__(self, root: Path, *, max_bytes: int = 16 << 20) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._keys: dict[str, bytes] = {}

    # --- lifecycle ---------------------------------------------------------------------------------

    def wipe_all(self) -> int:
        """Delete every stored session (at start: leftovers of a crash). Returns how many were found."""
        self._keys.clear()
        if not self.root.exists():
            return 0
        found = 0
        for entry in self.root.iterdir():
            found += 1
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
        return found

    def wipe(self, session_id: str) -> None:
        """Drop the session's key and delete its files (idempotent)."""
        self._keys.pop(session_id, None)
        path = self._dir(session_id)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    # --- writing -----------------------------------------------------------------------------------

    def seal_file(
        self,
        session_id: str,
        doc_id: str,
        source: Path,
        *,
        expect_sha256: str | None = None,
        expect_bytes: int | None = None,
    ) -> Sealed:
        """Read a plaintext image the camera wrote, verify it and encrypt it in memory (blocking: run it
        in a thread). The source file is not touched; the caller deletes it."""
        try:
            st = source.stat()
        except OSError as exc:
            raise DocumentStoreError(f"capture file {source} is unreadable: {exc.strerror or exc}") from None
        if not source.is_file():
            raise DocumentStoreError(f"capture {source} is not a regular file")
        if st.st_size > self.max_bytes:
            raise DocumentStoreError(f"capture is {st.st_size} bytes; at most {self.max_bytes} are accepted")
        if st.st_size == 0:
            raise DocumentStoreError("capture file is empty")
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise DocumentStoreError(f"capture file {source} is unreadable: {exc.strerror or exc}") from None
        return self.seal(session_id, doc_id, data, expect_sha256=expect_sha256, expect_bytes=expect_bytes)

    def seal(
        self,
        session_id: str,
        doc_id: str,
        data: bytes,
        *,
        expect_sha256: str | None = None,
        expect_bytes: int | None = None,
    ) -> Sealed:
        self._check_ids(session_id, doc_id)
        if not data or len(data) > self.max_bytes:
            raise DocumentStoreError(f"image of {len(data)} bytes; 1..{self.max_bytes} are accepted")
        if expect_bytes is not None and expect_bytes != len(data):
            raise DocumentStoreError(f"capture is {len(data)} bytes but the camera reported {expect_bytes}")
        digest = hashlib.sha256(data).digest()
        if expect_sha256 is not None and expect_sha256.lower() != digest.hex():
            raise DocumentStoreError(
                "capture's SHA-256 differs from what the camera reported (file changed?)"
            )
        # Imported on first use: it costs the appliance ~7 MB RSS, and most kiosks idle most of the day.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._keys.setdefault(session_id, AESGCM.generate_key(bit_length=256))
        aead = AESGCM(key)
        parts = [HEADER.pack(MAGIC, SEGMENT, len(data), digest)]
        for index, start in enumerate(range(0, len(data), SEGMENT)):
            nonce = os.urandom(NONCE)
            aad = self._aad(session_id, doc_id, index, len(data))
            parts.append(nonce + aead.encrypt(nonce, data[start : start + SEGMENT], aad))
        return Sealed(session_id, doc_id, b"".join(parts), digest.hex(), len(data), sniff_mime(data[:8]))

    def write_pending(self, sealed: Sealed) -> None:
        """Store a sealed capture as the pending (not yet accepted) image of its document."""
        if sealed.session_id not in self._keys:
            raise DocumentStoreError(f"session {sealed.session_id} was wiped; capture discarded")
        self._write(self._path(sealed.session_id, sealed.doc_id, "pending"), sealed.blob)

    def keep(self, session_id: str, doc_id: str) -> None:
        """The pending capture becomes the document's image (replacing an earlier one)."""
        pending = self._path(session_id, doc_id, "pending")
        try:
            os.replace(pending, self._path(session_id, doc_id, "bin"))
        except OSError as exc:
            raise DocumentStoreError(f"cannot keep capture of {doc_id}: {exc.strerror or exc}") from None

    def drop_pending(self, session_id: str, doc_id: str) -> None:
        with contextlib.suppress(OSError):
            self._path(session_id, doc_id, "pending").unlink()

    def drop(self, session_id: str, doc_id: str) -> None:
        with contextlib.suppress(OSError):
            self._path(session_id, doc_id, "bin").unlink()

    # --- reading -----------------------------------------------------------------------------------

    def read(self, session_id: str, doc_id: str, offset: int, length: int) -> tuple[bytes, int, str]:
        """``length`` plaintext bytes from ``offset`` of the accepted image: (chunk, total, sha256 hex)."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._keys.get(session_id)
        if key is None:
            raise DocumentStoreError(f"session {session_id} has no stored documents")
        path = self._path(session_id, doc_id, "bin")
        try:
            with path.open("rb") as f:
                magic, seg, total, digest = HEADER.unpack(f.read(HEADER.size))
                if magic != MAGIC or seg <= 0:
                    raise DocumentStoreError(f"{path.name}: not a sealed document")
                if offset < 0 or offset > total:
                    raise DocumentStoreError(f"offset {offset} is beyond the document's {total} bytes")
                end = min(total, offset + max(0, length))
                out = bytearray()
                aead = AESGCM(key)
                first, last = offset // seg, (max(end, 1) - 1) // seg
                for index in range(first, last + 1 if end > offset else first):
                    plain_len = min(seg, total - index * seg)
                    f.seek(HEADER.size + index * (NONCE + seg + TAG))
                    rec = f.read(NONCE + plain_len + TAG)
                    if len(rec) != NONCE + plain_len + TAG:
                        raise DocumentStoreError(f"{path.name}: truncated at segment {index}")
                    aad = self._aad(session_id, doc_id, index, total)
                    plain = aead.decrypt(rec[:NONCE], rec[NONCE:], aad)
                    lo = max(offset - index * seg, 0)
                    hi = min(end - index * seg, plain_len)
                    out += plain[lo:hi]
        except FileNotFoundError:
            raise DocumentStoreError(f"document {doc_id} is not stored") from None
        except InvalidTag:
            raise DocumentStoreError(f"{path.name}: failed authentication (corrupted on disk)") from None
        except (OSError, struct.error) as exc:
            raise DocumentStoreError(f"{path.name}: unreadable: {exc}") from None
        return bytes(out), total, digest.hex()

    # --- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _aad(session_id: str, doc_id: str, index: int, total: int) -> bytes:
        return f"{session_id}/{doc_id}/{index}/{total}".encode()

    @staticmethod
    def _check_ids(session_id: str, doc_id: str) -> None:
        # Both become path components: never let one escape the store.
        for what, value in (("session id", session_id), ("doc id", doc_id)):
            if not _SAFE.match(value) or value in (".", ".."):
                raise DocumentStoreError(f"{what} {value!r} is not a safe file name")

    def _dir(self, session_id: str) -> Path:
        self._check_ids(session_id, "x")
        return self.root / session_id

    def _path(self, session_id: str, doc_id: str, suffix: str) -> Path:
        self._check_ids(session_id, doc_id)
        return self.root / session_id / f"{doc_id}.{suffix}"

    @staticmethod
    def _write(path: Path, blob: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise DocumentStoreError(f"cannot store {path.name}: {exc.strerror or exc}") from None
