"""The receipt and the appointment slip on screen when the printer could not print: the villager is
told to collect the receipt at the window or scan the code (Pilot, real local bus)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_ui_flows import Kiosk, feed, kiosk  # noqa: F401 - fixtures

from sim.ui_harness import SAMPLES

pytestmark = pytest.mark.timeout(30)

FALLBACK_ZH = "请到窗口领取回执 / 用手机扫码"
FALLBACK_EN = "Collect your receipt at the counter / scan the code"


def receipt(print_state: dict[str, Any] | None) -> dict[str, Any]:
    state = copy.deepcopy(SAMPLES["receipt"])
    state["view"]["print"] = print_state
    return state


def booked(print_state: dict[str, Any] | None) -> dict[str, Any]:
    state = copy.deepcopy(SAMPLES["appointment"])
    state["actions"] = ["done", "language"]
    state["view"] = {
        **state["view"],
        "phase": "booked",
        "booking": {
            "booking_no": "YY-20261123-0001",
            "slot": state["view"]["slots"][0],
            "qr_text": "https://zwfw.example.gov.cn/booking?no=YY-20261123-0001",
        },
        "print": print_state,
    }
    return state


async def test_no_paper_on_the_receipt_screen_says_window_or_scan(kiosk: Kiosk):  # noqa: F811
    await kiosk.show(receipt({"status": "printing", "code": None}))
    assert FALLBACK_ZH not in kiosk.text
    await kiosk.show(receipt({"status": "failed", "code": "printer.no_paper"}))
    assert FALLBACK_ZH in kiosk.text and "SQ330803-20261121-0007" in kiosk.text
    await kiosk.show(receipt({"status": "failed", "code": "printer.offline"}), lang="en")
    assert FALLBACK_EN in kiosk.text and FALLBACK_ZH not in kiosk.text
    await kiosk.show(receipt({"status": "printed", "code": None}))
    assert FALLBACK_ZH not in kiosk.text
    await kiosk.press("1")
    await kiosk.feed.next_intent("continue")


async def test_a_booking_that_did_not_print_says_window_or_scan(kiosk: Kiosk):  # noqa: F811
    await kiosk.show(booked(None))
    assert "YY-20261123-0001" in kiosk.text and FALLBACK_ZH not in kiosk.text
    await kiosk.show(booked({"status": "failed", "code": "printer.cover_open"}))
    assert FALLBACK_ZH in kiosk.text and "YY-20261123-0001" in kiosk.text
    await kiosk.press("1")
    await kiosk.feed.next_intent("done")
