"""Validators for platform command params: each returns the clean value or raises ``BadRequest``
naming the key and what is allowed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from appliance.session.state import LANGS, localized
from kiosk_core.errors import BadRequest


def text_param(
    params: dict[str, Any], key: str, *, max_len: int, required: bool = True, min_len: int = 1
) -> str | None:
    value = params.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key}: required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key}: must be a string, got {type(value).__name__}")
    value = value.strip()
    if not min_len <= len(value) <= max_len:
        raise BadRequest(f"{key}: must be {min_len}..{max_len} characters, got {len(value)}")
    return value


def int_param(params: dict[str, Any], key: str, *, lo: int, hi: int) -> int:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key}: must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadRequest(f"{key}: must be {lo}..{hi}, got {value}")
    return value


def list_param(params: dict[str, Any], key: str, *, max_len: int) -> list[Any]:
    value = params.get(key)
    if not isinstance(value, list):
        raise BadRequest(f"{key}: must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise BadRequest(f"{key}: at most {max_len} entries, got {len(value)}")
    return value


def objects_param(params: dict[str, Any], key: str, *, max_len: int) -> Iterator[dict[str, Any]]:
    """The objects of a list of at most ``max_len``, each checked as the caller reaches it (so the
    first bad entry, or the first bad field of an earlier one, is the one reported)."""
    for n, entry in enumerate(list_param(params, key, max_len=max_len)):
        if not isinstance(entry, dict):
            raise BadRequest(f"{key}.{n}: must be an object")
        yield entry


def name_param(params: dict[str, Any], key: str, *, max_len: int = 60) -> dict[str, str]:
    """A name as a string or ``{"zh-CN": ..., "en": ...}``."""
    value = params.get(key)
    if isinstance(value, dict):
        out = {}
        for lang in LANGS:
            text = value.get(lang)
            if not isinstance(text, str) or not 1 <= len(text.strip()) <= max_len:
                raise BadRequest(f"{key}.{lang}: must be a string of 1..{max_len} characters")
            out[lang] = text.strip()
        return out
    text = text_param(params, key, max_len=max_len)
    assert text is not None
    return localized(text)
