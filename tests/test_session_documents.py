"""The encrypted document store and the service catalog: what they accept, what they refuse, what survives."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.session.catalog import CatalogStore, default_catalog, parse_catalog
from appliance.session.config import FACTORY_PIN, SessionConfig, check_pin, hash_pin
from appliance.session.documents import SEGMENT, DocumentStore
from appliance.session.errors import CatalogInvalid, DocumentStoreError

SID = "s-0123456789abcdef"
IMAGE = b"\xff\xd8\xff\xe0" + os.urandom(3 * SEGMENT + 1234)


@pytest.fixture
def store(tmp_path: Path) -> DocumentStore:
    s = DocumentStore(tmp_path / "documents", max_bytes=1 << 20)
    sealed = s.seal(SID, "id_card", IMAGE)
    s.write_pending(sealed)
    s.keep(SID, "id_card")
    return s


def test_a_kept_image_reads_back_exactly_and_is_not_plaintext_on_disk(store: DocumentStore, tmp_path: Path):
    chunk, total, digest = store.read(SID, "id_card", 0, len(IMAGE))
    assert chunk == IMAGE and total == len(IMAGE) and digest == hashlib.sha256(IMAGE).hexdigest()
    on_disk = (tmp_path / "documents" / SID / "id_card.bin").read_bytes()
    assert IMAGE[:64] not in on_disk and IMAGE[SEGMENT : SEGMENT + 64] not in on_disk
    assert oct((tmp_path / "documents" / SID / "id_card.bin").stat().st_mode & 0o777) == "0o600"


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, len(IMAGE)), length=st.integers(1, 2 * SEGMENT + 7))
def test_any_chunk_equals_the_same_slice_of_the_image(tmp_path_factory, offset: int, length: int):
    s = DocumentStore(tmp_path_factory.mktemp("docs"))
    s.write_pending(s.seal(SID, "d", IMAGE))
    s.keep(SID, "d")
    chunk, _, _ = s.read(SID, "d", offset, length)
    assert chunk == IMAGE[offset : offset + length]


def test_a_tampered_or_truncated_file_is_refused(store: DocumentStore, tmp_path: Path):
    path = tmp_path / "documents" / SID / "id_card.bin"
    blob = bytearray(path.read_bytes())
    blob[200] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(DocumentStoreError, match="authentication"):
        store.read(SID, "id_card", 0, 100)
    path.write_bytes(bytes(blob[:300]))
    with pytest.raises(DocumentStoreError, match="truncated"):
        store.read(SID, "id_card", SEGMENT, 100)


def test_segments_cannot_be_swapped_between_documents(tmp_path: Path):
    s = DocumentStore(tmp_path / "documents")
    for doc in ("a", "b"):
        s.write_pending(s.seal(SID, doc, IMAGE))
        s.keep(SID, doc)
    a, b = tmp_path / "documents" / SID / "a.bin", tmp_path / "documents" / SID / "b.bin"
    a.write_bytes(b.read_bytes())  # same key, same length, different document name
    with pytest.raises(DocumentStoreError):
        s.read(SID, "a", 0, 10)


def test_wipe_drops_the_key_and_the_files(store: DocumentStore, tmp_path: Path):
    store.wipe(SID)
    assert not (tmp_path / "documents" / SID).exists()
    with pytest.raises(DocumentStoreError):
        store.read(SID, "id_card", 0, 10)
    sealed = DocumentStore(tmp_path / "other").seal(SID, "late", b"x")
    with pytest.raises(DocumentStoreError, match="wiped"):
        store.write_pending(sealed)  # a capture finishing after the session ended is discarded


@pytest.mark.parametrize(
    "session_id, doc_id",
    [("../x", "a"), (SID, "../../etc/passwd"), (SID, ".."), (SID, "a/b"), ("", "a"), (SID, "x" * 65)],
)
def test_ids_that_would_escape_the_store_are_refused(tmp_path: Path, session_id: str, doc_id: str):
    with pytest.raises(DocumentStoreError, match="safe file name"):
        DocumentStore(tmp_path).seal(session_id, doc_id, b"data")


def test_camera_files_are_checked_against_what_the_camera_reported(tmp_path: Path):
    s = DocumentStore(tmp_path / "documents", max_bytes=1000)
    src = tmp_path / "shot.jpg"
    src.write_bytes(b"\xff\xd8\xff" + b"a" * 100)
    sealed = s.seal_file(
        SID, "d", src, expect_sha256=hashlib.sha256(src.read_bytes()).hexdigest(), expect_bytes=103
    )
    assert sealed.mime == "image/jpeg" and sealed.size == 103
    with pytest.raises(DocumentStoreError, match="SHA-256"):
        s.seal_file(SID, "d", src, expect_sha256="0" * 64)
    with pytest.raises(DocumentStoreError, match="reported"):
        s.seal_file(SID, "d", src, expect_bytes=104)
    src.write_bytes(b"a" * 1001)
    with pytest.raises(DocumentStoreError, match="at most"):
        s.seal_file(SID, "d", src)
    with pytest.raises(DocumentStoreError, match="unreadable"):
        s.seal_file(SID, "d", tmp_path / "missing.jpg")
    with pytest.raises(DocumentStoreError, match="regular file"):
        s.seal_file(SID, "d", tmp_path)


# --- the catalog -----------------------------------------------------------------------------------------


def test_the_shipped_catalog_has_about_forty_items_in_both_languages():
    cat = default_catalog()
    assert 40 <= len(cat.items) <= 60
    deps = {d.id for d in cat.departments}
    assert {"shebao", "yibao", "minzheng", "huji", "nongye", "canlian"} <= deps
    assert all(i.documents and any(d.required for d in i.documents) for i in cat.items)
    assert all(i.name.zh and i.name.en for i in cat.items)


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda c: c.update(version=0), "version"),
        (lambda c: c["items"][0].update(department="nowhere"), "nowhere"),
        (lambda c: c["items"].append(dict(c["items"][0])), "repeated"),
        (lambda c: c["items"][0]["name"].pop("en"), "en"),
        (lambda c: c["items"][0].update(id="Bad ID!"), "items.0.id"),
        (
            lambda c: c["items"][0]["documents"].append(dict(c["items"][0]["documents"][0])),
            "document ids repeated",
        ),
        (lambda c: c.update(surprise=True), "unknown key"),
        (lambda c: c.update(departments=[]), "departments"),
        (lambda c: c["items"][0]["name"].update({"zh-CN": "长" * 61}), "zh-CN"),
    ],
)
def test_a_broken_catalog_is_refused_naming_the_problem(mutate, problem):
    data = json.loads(json.dumps(default_catalog().model_dump(mode="json", by_alias=True)))
    mutate(data)
    with pytest.raises(CatalogInvalid, match=problem):
        parse_catalog(data)


def test_a_damaged_stored_catalog_falls_back_to_the_shipped_one(tmp_path: Path):
    (tmp_path / "catalog.json").write_bytes(b'{"version": 9, "departments": [')
    store = CatalogStore(tmp_path)
    assert store.current.version == 1 and "not UTF-8 JSON" in (store.load_problem or "")


def test_a_broken_catalog_override_falls_back_to_the_shipped_one(tmp_path: Path):
    override = tmp_path / "my-catalog.json"
    override.write_text(json.dumps({"version": 5, "departments": [], "items": []}))
    store = CatalogStore(tmp_path / "state", override)
    assert store.current.version == 1 and "departments" in (store.load_problem or "")


def test_pin_hashes_and_config_defaults():
    cfg = SessionConfig()
    assert (cfg.idle_timeout_s, cfg.idle_warning_s, cfg.default_lang) == (90, 15, "zh-CN")
    assert check_pin(FACTORY_PIN, cfg.technician_pin_hash) and cfg.pin_is_default
    own = hash_pin("97531", iterations=1000)
    assert check_pin("97531", own) and not check_pin("97530", own)
    for bad in (
        {"technician_pin_hash": "1234"},
        {"idle_warning_s": 90},
        {"receipt_url_template": "{x}"},
        {"idle_timeout_s": 5},
        {"nonsense": 1},
    ):
        with pytest.raises(ValueError):
            SessionConfig(**bad)
