"""Every screen at 80x24, 100x30 and 160x45, in both languages: nothing cut, and large print at 160x45.

"Cut" is what a villager cannot read or press: a widget outside the screen (or under the hint line) or
outside its container, a button whose digit and label are not all drawn inside it, a header that drops
who is identified. At 160x45 (a large screen at a small font) the same screen must grow: taller buttons
and content that reaches down the screen, instead of the design-size layout in the top half.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_ui_keys import variants
from test_ui_snapshots import scenes
from textual.geometry import Region
from textual.widget import Widget

from kiosk_ui.app import KioskApp
from kiosk_ui.widgets.choice import ChoiceButton
from sim.mosquitto import Mosquitto
from sim.ui_harness import StateFeed, screen_text, wait_until

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("heavy")]
SIZES = [(80, 24), (100, 30), (160, 45)]
BORDERS = set("▊▎▔▁")


def cut(app: KioskApp) -> list[str]:
    width, height = app.size
    area = Region(0, 0, width, height - 1)  # the last row is the hint
    out = []
    for widget in app.screen.query("#body *, .actions *"):
        region = widget.region
        # The message list is the one container meant to clip: the oldest messages scroll away.
        if not region.area or widget.parent is None or widget.parent.id == "call-message-list":
            continue
        parent = widget.parent.region if isinstance(widget.parent, Widget) else area
        for outer, what in ((area, "the screen"), (parent, "its container")):
            if region.intersection(outer) != region:
                out.append(f"{widget!r} at {region} is cut by {what} {outer}")
    strips = app.screen._compositor.render_strips()  # noqa: SLF001 - as sim.ui_harness.screen_text
    for button in app.screen.query(ChoiceButton):
        r = button.region
        drawn = "".join("".join(s.crop(r.x, r.right).text for s in strips[r.y : r.bottom]).split())
        drawn = "".join(c for c in drawn if c not in BORDERS)
        label = "".join(f"{button.digit}{button.choice_label}".split())
        if label not in drawn:
            out.append(f"button {label!r} shows only {drawn!r}")
    r = app.screen.query_one("#header").region
    header = " ".join(screen_text(app).splitlines()[r.y : r.bottom])
    identity = (app.states.get("session") or {}).get("identity") or {}
    if identity.get("id_masked") and identity["id_masked"] not in header:
        out.append(f"the header drops who is identified: {header!r}")
    return out


def extent(app: KioskApp) -> tuple[int, int]:
    """(the lowest row any button reaches, the tallest button)."""
    buttons = [b.region for b in app.screen.query(ChoiceButton) if b.region.area]
    return max((r.bottom for r in buttons), default=0), max((r.height for r in buttons), default=0)


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
async def test_every_screen_fits_at_every_size_and_grows_on_a_large_one(lang: str, bus_broker: Mosquitto):
    every: dict[str, dict[str, Any]] = {**scenes(), **variants()}
    problems: list[str] = []
    grown: dict[tuple[int, int], dict[str, tuple[int, int]]] = {}
    for size in SIZES:
        app = KioskApp("127.0.0.1", bus_broker.port)
        async with StateFeed("127.0.0.1", bus_broker.port) as feed, app.run_test(size=size) as pilot:
            await wait_until(pilot, lambda a=app: a.bus_connected, what="UI connected")
            grown[size] = {}
            for name, state in every.items():
                seq = feed.seq + 1
                await feed.publish("session", {**copy.deepcopy(state), "lang": lang})
                await wait_until(
                    pilot,
                    lambda a=app, s=seq, st=state: (
                        a.states.get("session", {}).get("seq") == s and a.screen_name == st["screen"]
                    ),
                    what=f"{name} at {size}",
                )
                await pilot.pause()
                problems += [f"{name} {size[0]}x{size[1]} {lang}: {p}" for p in cut(app)]
                grown[size][name] = extent(app)
    assert not problems, "\n".join(problems)
    # Large print: at 160x45 the buttons are taller than at the design size and reach further down.
    for name, (bottom, tallest) in grown[(160, 45)].items():
        small_bottom, small_tallest = grown[(100, 30)][name]
        if not small_tallest:
            continue  # no buttons (unavailable)
        assert tallest > small_tallest, f"{name}: buttons {tallest} rows at 160x45, {small_tallest} at 100x30"
        assert bottom >= small_bottom * 45 / 30 * 0.8, f"{name}: content ends at row {bottom} of 45"
