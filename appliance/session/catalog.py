"""The service catalog: departments and items (with the documents each needs), versioned configuration.

A default ships as ``catalog_default.json``; the platform pushes newer versions (``session.catalog.set``)
which are validated here and stored atomically. Rules are in docs/session.md §6.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from appliance.session.errors import CatalogInvalid
from kiosk_core.fsutil import write_atomic

MAX_CATALOG_BYTES = 1 << 20
ID_PATTERN = r"^[a-z0-9_.-]{1,64}$"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
Ident = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalText(_Frozen):
    """A name in both languages of the kiosk."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    zh: Name = Field(alias="zh-CN")
    en: Name

    def as_dict(self) -> dict[str, str]:
        return {"zh-CN": self.zh, "en": self.en}


class DocumentSpec(_Frozen):
    """One paper an item needs. A document ``id_card`` is the villager's ID card, whose chip the reader
    reads (data and photo): it is not photographed unless ``card_photo`` says a picture of the card
    itself is needed. ``card_photo``: this paper is the ID card on the reader, photographed; its capture
    screen lets the card leave the reader."""

    id: Ident
    name: LocalText
    required: bool = True
    card_photo: bool = False


class Department(_Frozen):
    id: Ident
    name: LocalText


class Item(_Frozen):
    id: Ident
    department: Ident
    name: LocalText
    minutes: int = Field(10, ge=1, le=240)
    documents: tuple[DocumentSpec, ...] = Field(default=(), max_length=15)

    @model_validator(mode="after")
    def _unique_documents(self) -> Item:
        ids = [d.id for d in self.documents]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"document ids repeated: {', '.join(dupes)}")
        return self


class Catalog(_Frozen):
    version: int = Field(ge=1)
    departments: tuple[Department, ...] = Field(min_length=1, max_length=30)
    items: tuple[Item, ...] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        problems = []
        dep_ids = [d.id for d in self.departments]
        for dup in sorted({i for i in dep_ids if dep_ids.count(i) > 1}):
            problems.append(f"department id {dup!r} repeated")
        item_ids = [i.id for i in self.items]
        for dup in sorted({i for i in item_ids if item_ids.count(i) > 1}):
            problems.append(f"item id {dup!r} repeated")
        known = set(dep_ids)
        for n, item in enumerate(self.items):
            if item.department not in known:
                problems.append(
                    f"items.{n} ({item.id}): department {item.department!r} is not in departments"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- lookups (what the state machine needs) ----------------------------------------------------

    def department(self, department_id: str) -> Department | None:
        return next((d for d in self.departments if d.id == department_id), None)

    def item(self, item_id: str) -> Item | None:
        return next((i for i in self.items if i.id == item_id), None)

    def items_of(self, department_id: str) -> list[Item]:
        return [i for i in self.items if i.department == department_id]

    def departments_view(self) -> list[dict[str, Any]]:
        return [
            {"id": d.id, "name": d.name.as_dict(), "item_count": len(self.items_of(d.id))}
            for d in self.departments
        ]


def parse_catalog(obj: Any, source: str = "<catalog>") -> Catalog:
    """Validate catalog data; raises ``CatalogInvalid`` listing every located problem."""
    if not isinstance(obj, dict):
        raise CatalogInvalid(source, [f"must be a JSON object, got {type(obj).__name__}"])
    try:
        return Catalog.model_validate(obj)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False)[:20]:
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{loc}: {msg}")
        raise CatalogInvalid(source, problems) from None


def read_catalog(path: Path) -> Catalog:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogInvalid(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_CATALOG_BYTES:
        raise CatalogInvalid(str(path), [f"{len(raw)} bytes; at most {MAX_CATALOG_BYTES} are accepted"])
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogInvalid(str(path), [f"not UTF-8 JSON: {exc}"]) from None
    return parse_catalog(obj, str(path))


def default_catalog() -> Catalog:
    """The catalog shipped with the firmware."""
    ref = resources.files("appliance.session").joinpath("catalog_default.json")
    with resources.as_file(ref) as path:
        return read_catalog(Path(path))


class CatalogStore:
    """The catalog in force: the newest of the shipped default (or ``override``) and the last pushed one.

    Pushed catalogs are written to ``{directory}/catalog.json`` atomically (temp file, fsync, rename), so
    a power cut leaves either the old or the new file, never half of one.
    """

    def __init__(self, directory: Path, override: Path | None = None) -> None:
        self.path = directory / "catalog.json"
        self.directory = directory
        self.load_problem: str | None = None
        base = default_catalog()
        if override is not None:
            try:
                base = read_catalog(override)
            except CatalogInvalid as exc:
                # A broken override must not take the session away: the shipped catalog serves instead.
                self.load_problem = str(exc)
        self.current = base
        if self.path.exists():
            try:
                stored = read_catalog(self.path)
            except CatalogInvalid as exc:
                # A damaged stored catalog must not stop the kiosk: keep the shipped one and say so.
                self.load_problem = "; ".join(filter(None, [self.load_problem, str(exc)]))
            else:
                if stored.version > base.version:
                    self.current = stored

    def apply(self, version: Any, data: Any) -> bool:
        """Validate and store a pushed catalog; False if it is not newer than the current one."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CatalogInvalid("session.catalog.set", ["version: must be an integer >= 1"])
        if not isinstance(data, dict):
            raise CatalogInvalid("session.catalog.set", ["catalog: must be a JSON object"])
        if "version" in data and data["version"] != version:
            raise CatalogInvalid(
                "session.catalog.set",
                [f"catalog.version ({data['version']!r}) differs from version ({version})"],
            )
        catalog = parse_catalog({**data, "version": version}, "session.catalog.set")
        if catalog.version <= self.current.version:
            return False
        text = json.dumps(catalog.model_dump(mode="json", by_alias=True), ensure_ascii=False, indent=1)
        if len(text.encode()) > MAX_CATALOG_BYTES:
            raise CatalogInvalid("session.catalog.set", [f"larger than {MAX_CATALOG_BYTES} bytes"])
        write_atomic(self.path, text.encode())
        self.current = catalog
        return True
