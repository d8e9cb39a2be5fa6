"""The technician screen: reasons in words with the port and what to check, every status line, no
"session" among the peripherals, a localised test notice that goes away when stale, and a page that fits.
"""

from __future__ import annotations

import copy
import time

import pytest
import test_ui_flows
from session_helpers import make_machine
from test_ui_flows import Kiosk, sample
from test_ui_layout import cut

from appliance.session.flows.technician import technician_view
from appliance.session.state import Screen
from kiosk_ui.screens.technician import TechnicianScreen

pytestmark = pytest.mark.timeout(60)
feed = test_ui_flows.feed
kiosk = test_ui_flows.kiosk

MEDIA = {
    "running": True,
    "recording": {"session_id": None, "segments": 12, "bytes": 7340032},
    "disk": {"recordings_bytes": 7340032, "free_bytes": 12 * 1024**3},
    "uplink": {"state": "on", "bytes_sent": 1000},
    "audio": {"source": "alsa:default", "health": {"status": "ok", "reason": ""}},
}


def drawn(kiosk: Kiosk, selector: str) -> str:
    """The text drawn inside the widgets matching ``selector``, wrapped lines joined by a space."""
    strips = kiosk.app.screen._compositor.render_strips()  # noqa: SLF001 - as sim.ui_harness.screen_text
    out = []
    for widget in kiosk.app.screen.query(selector):
        r = widget.region
        out.append(" ".join(s.crop(r.x, r.right).text.strip() for s in strips[r.y : r.bottom]))
    return " ".join(out)


def technician(**view) -> dict:
    state = sample("technician")
    state["view"]["peripherals"] = [
        *state["view"]["peripherals"],
        {"name": "session", "kind": "", "status": "ok", "reason": ""},
    ]
    state["view"]["clock"] = {"synced": True}
    state["view"].update(view)
    return state


async def test_the_page_says_everything_in_words_and_fits(kiosk: Kiosk):
    await kiosk.feed.publish("media", MEDIA)
    await kiosk.show(technician())
    text = kiosk.text
    for words in [
        "找不到 /dev/video2：请检查拍照台（高拍仪）的 USB",  # the port and what to check, in Chinese
        "身份证阅读器",
        "固件版本：0.1.0",
        "平台连接：已连接",
        "时钟同步：已同步",
        "录像：正在录像（已存 12 段）",
        "磁盘：可用 12.0 GB，录像占用 7.0 MB",
        "视频上传：正在上传",
        "音频：正常",
    ]:
        assert words in text, f"{words!r} not on\n{text}"
    assert "session" not in text and "会话" not in text, "the session is not a peripheral"
    assert not [b for b in kiosk.buttons().values() if "session" in b]
    assert not cut(kiosk.app), cut(kiosk.app)
    await kiosk.show(technician(), lang="en")
    assert "/dev/video2 not found: check that the document camera's USB cable" in drawn(kiosk, ".tech-reason")
    assert not cut(kiosk.app)


async def test_the_test_notice_is_localised_and_goes_when_stale(kiosk: Kiosk, monkeypatch):
    now = [time.time()]
    monkeypatch.setattr(TechnicianScreen, "clock", staticmethod(lambda: now[0]))
    done = technician(tests={"doccam": {"status": "failed", "detail": "", "ts": now[0]}})
    done["notice"] = {"code": "test_done", "params": {"peripheral": "doccam", "status": "failed"}}
    await kiosk.show(done)
    assert "拍照台（高拍仪） 测试完成：测试失败" in kiosk.text
    assert "doccam 测试完成" not in kiosk.text and "failed" not in kiosk.text
    now[0] += 31  # half a minute later the result says nothing about the device now
    await kiosk.pilot.pause(1.3)
    assert "测试完成" not in kiosk.text
    rebuilt = copy.deepcopy(done)
    rebuilt["view"]["pin_is_default"] = False  # a rebuild does not bring the stale notice back
    await kiosk.show(rebuilt)
    assert "测试完成" not in kiosk.text


def test_the_appliance_does_not_list_the_session_and_names_the_firmware():
    m = make_machine()
    m.screen = Screen.TECHNICIAN
    m.technician = type("T", (), {"status": {}, "tests": {}})()
    m.technician.status = {
        "device": {"id": "kiosk-0001"},
        "peripherals": [
            {"name": "card_reader", "status": "ok", "reason": ""},
            {"name": "session", "status": "ok", "reason": ""},
        ],
        "network": {},
        "clock": {"synced": False},
    }
    view = technician_view(m)
    assert [p["name"] for p in view["peripherals"]] == ["card_reader"]
    assert view["device"]["firmware"] and view["clock"] == {"synced": False}
