"""Message catalogs: every string the villager sees comes from ``kiosk_ui/locales/{lang}.json``.

zh-CN is the default and the reference catalog; English must carry the same keys (a test checks it).
A key missing from the active catalog falls back to zh-CN and then to the key itself, so a new string
never crashes the kiosk, but ``Catalog.missing`` records it for the tests and for a technician.

Placeholders use ``str.format`` names: ``"wait": "前面还有 {position} 人"``. Values that come from the
bus are formatted with ``format_map`` over a dict that leaves unknown names visible instead of raising.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from kiosk_core.errors import KioskError

LOCALE_DIR = Path(__file__).with_name("locales")
DEFAULT_LANGUAGE = "zh-CN"
LANGUAGES = ("zh-CN", "en")


class CatalogError(KioskError, ValueError):
    code = "ui.catalog"


class _Keep(dict[str, Any]):
    """Leaves an unknown ``{name}`` in the text rather than failing mid-screen."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@cache
def _load(language: str) -> dict[str, str]:
    if language not in LANGUAGES:
        raise CatalogError(f"unknown language {language!r}; the kiosk speaks {', '.join(LANGUAGES)}")
    path = LOCALE_DIR / f"{language}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: cannot load message catalog: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CatalogError(f"{path}: a catalog is one JSON object of string keys to string texts")
    return data


class Catalog:
    """The texts of one language. ``catalog("call.position", position=3)``."""

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        self.language = language
        self._texts = _load(language)
        self._fallback = _load(DEFAULT_LANGUAGE)
        self.missing: set[str] = set()

    def __call__(self, key: str, **values: Any) -> str:
        text = self._texts.get(key)
        if text is None:
            self.missing.add(key)
            text = self._fallback.get(key, key)
        return text.format_map(_Keep(values)) if values else text

    def has(self, key: str) -> bool:
        return key in self._texts

    def keys(self) -> set[str]:
        return set(self._texts)

    def pick(self, texts: Any, default: str = "") -> str:
        """Choose this language's text from a bus value that may be bilingual.

        The state may carry ``"社保"``, or ``{"zh-CN": "社保", "en": "Social security"}``; the platform's
        catalog is in Chinese first, so English falls back to Chinese when it has no translation.
        """
        if isinstance(texts, str):
            return texts
        if isinstance(texts, dict):
            for lang in (self.language, DEFAULT_LANGUAGE, "zh", "en"):
                value = texts.get(lang)
                if isinstance(value, str) and value:
                    return value
        return default
