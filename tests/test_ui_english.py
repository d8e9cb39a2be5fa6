"""English mode shows no Chinese UI strings: every sample screen rendered in English, widget by widget.

The only Chinese allowed on an English screen is what the bus brought (a clerk's message, the clerk's
and villager's names, the station's name, a document the clerk named in Chinese, the platform's note)
and the way back to Chinese (the language button "9 中文"). Wording of the Chinese catalog is checked
here too: Chinese punctuation and no jargon in the villager's words.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import test_ui_flows
from test_ui_flows import Kiosk
from test_ui_keys import variants
from test_ui_snapshots import scenes

pytestmark = pytest.mark.timeout(90)
feed = test_ui_flows.feed
kiosk = test_ui_flows.kiosk

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
LOCALES = Path(__file__).resolve().parent.parent / "kiosk_ui" / "locales"
WAY_BACK = "中文"  # the language button and the attract hint: the way back for a Chinese reader


def bus_strings(value: Any) -> list[str]:
    """Every string in a state that came from the appliance, longest first (removed before checking)."""
    out: list[str] = []
    if isinstance(value, str):
        out.append("".join(value.split()))
    elif isinstance(value, dict):
        for v in value.values():
            out += bus_strings(v)
    elif isinstance(value, list):
        for v in value:
            out += bus_strings(v)
    return sorted({s for s in out if CJK.search(s)}, key=len, reverse=True)


def chinese_in_widgets(kiosk: Kiosk, provided: list[str]) -> list[str]:
    """The leaf widgets whose drawn text has Chinese that is neither provided nor the way back."""
    strips = kiosk.app.screen._compositor.render_strips()  # noqa: SLF001 - as sim.ui_harness.screen_text
    found = []
    for widget in kiosk.app.screen.query("*"):
        r = widget.region
        if widget.children or not r.area:
            continue
        text = "".join("".join(s.crop(r.x, r.right).text for s in strips[r.y : r.bottom]).split())
        rest = text
        for s in [*provided, WAY_BACK]:
            rest = rest.replace(s, "")
        if CJK.search(rest):
            found.append(f"{widget!r}: {text!r}")
    return found


async def test_every_screen_in_english_shows_no_chinese_ui_strings(kiosk: Kiosk):
    every = {**scenes(), **variants()}
    problems = []
    for name, state in every.items():
        state = copy.deepcopy(state)
        await kiosk.show(state, lang="en")
        assert kiosk.app.catalog.language == "en"
        problems += [f"{name}: {p}" for p in chinese_in_widgets(kiosk, bus_strings(state))]
        if name == "call":  # and the replies, and the end question, in English too
            await kiosk.press("1")
            problems += [f"{name} replies: {p}" for p in chinese_in_widgets(kiosk, bus_strings(state))]
            await kiosk.press("8", "0")
            problems += [f"{name} end?: {p}" for p in chinese_in_widgets(kiosk, bus_strings(state))]
            await kiosk.press("1")
    assert not problems, "\n".join(problems)


def test_chinese_texts_use_chinese_punctuation_and_plain_words():
    zh = json.loads((LOCALES / "zh-CN.json").read_text(encoding="utf-8"))
    wrong = {}
    for key, text in zh.items():
        words = re.sub(r"\{[^}]*\}", "", text)  # placeholders are not text
        if CJK.search(words) and re.search(r"[(),:;!?]", words):
            wrong[key] = text
    assert not wrong, f"ASCII punctuation in Chinese text: {wrong}"
    villager = {k: v for k, v in zh.items() if not k.startswith(("tech.", "health."))}
    assert not [k for k, v in villager.items() if "高拍仪" in v], "say 拍照台 to a villager"
    assert "过期" not in zh["unavailable.reason.stale"]
