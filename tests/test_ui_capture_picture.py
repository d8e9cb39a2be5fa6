"""The document's picture on the capture screen (issue 8: "no picture anywhere"): the document
camera's live preview while the villager places the paper, and the photo itself at "照片清楚吗？".

The appliance's side is ``StateFeed`` on a real mosquitto (the ``Kiosk`` helper of tests/test_ui_flows.py);
the media process's side is a plain QoS 0 publish on ``kiosk/local/media/doccam/preview`` and
``.../still``, as ``edge_media.doccam_pictures`` does it (tests/test_media_doccam_pictures.py checks
that side). Sizes: 80x24 (where things get cut first), 100x30 (design) and 160x45 (large print).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import HandClock
from test_ui_call_media import SIZES, nothing_cut
from test_ui_flows import Kiosk, feed, sample  # noqa: F401 - feed: a fixture, used by its name
from textual.containers import Horizontal, Vertical

from kiosk_core.localbus import dumps
from kiosk_ui.app import KioskApp
from kiosk_ui.bus import (
    DOCCAM_PICTURE,
    DOCCAM_PREVIEW_TOPIC,
    DOCCAM_STILL_TOPIC,
    STILL_PICTURE,
    PreviewError,
    parse_preview,
)
from kiosk_ui.screens.capture import CaptureScreen
from kiosk_ui.widgets.picture import HALF_BLOCK, Picture
from sim.mosquitto import Mosquitto
from sim.ui_harness import StateFeed, wait_until

pytestmark = pytest.mark.timeout(60)
SESSION = "s-5d1e0a7c9b2f4e61"  # the session of SAMPLES["capture"]
PHOTO_SHA = "9b0c" + "1" * 60  # SAMPLES["capture"] view.image.sha256
# Four vertical bars, left to right: what a test pattern card under the camera would show.
BARS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
QUANTISED = [tuple(c & 0xFC for c in bar) for bar in BARS]  # the picture keeps 6 bits a channel


def bars(w: int, h: int) -> bytes:
    row = b"".join(bytes(BARS[x * len(BARS) // w]) for x in range(w))
    return row * h


def picture_payload(
    w: int = 96, h: int = 72, *, session_id: str = SESSION, seq: int = 1, **over: Any
) -> bytes:
    body = {
        "session_id": session_id,
        "w": w,
        "h": h,
        "rgb": base64.b64encode(bars(w, h)).decode(),
        "seq": seq,
    }
    return dumps({**body, **over})


def still_payload(w: int = 200, h: int = 150, *, sha256: str = PHOTO_SHA, **over: Any) -> bytes:
    return picture_payload(w, h, sha256=sha256, **over)


def capture_state(phase: str, *, lang: str = "zh-CN", note: str | None = None, **view: Any) -> dict[str, Any]:
    state = sample("capture", lang=lang)
    state["view"]["phase"] = phase
    state["view"]["doc"]["note"] = note
    state["view"].update(view)
    if phase != "review":
        state["view"]["image"] = None
    state["actions"] = {
        "preview": ["shoot", "back", "end", "language"],
        "capturing": ["language"],
        "review": ["accept", "retake", "end", "language"],
        "failed": ["shoot", "back", "end", "language"],
    }[phase]
    if phase == "failed":
        state["notice"] = {"code": "doccam_unavailable", "params": {"detail": "no frame within 5 s"}}
    return state


@pytest.fixture(params=SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def kiosk(
    request: pytest.FixtureRequest,
    feed: StateFeed,  # noqa: F811 - the fixture imported above
    bus_broker: Mosquitto,
) -> AsyncIterator[Kiosk]:
    app = KioskApp("127.0.0.1", bus_broker.port)
    async with app.run_test(size=request.param) as pilot:
        await wait_until(pilot, lambda: app.bus_connected, what="UI connected to the local bus")
        yield Kiosk(app, pilot, feed)


@pytest.fixture
async def small_kiosk(feed: StateFeed, bus_broker: Mosquitto) -> AsyncIterator[Kiosk]:  # noqa: F811
    app = KioskApp("127.0.0.1", bus_broker.port)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.bus_connected, what="UI connected to the local bus")
        yield Kiosk(app, pilot, feed)


async def publish(kiosk: Kiosk, topic: str, payload: bytes) -> None:
    """kiosk-media's publish: QoS 0, not retained."""
    await kiosk.feed.bus.link.publish(topic, payload, qos=0)


def picture(kiosk: Kiosk) -> Picture:
    return kiosk.app.screen.query_one("#doc-picture", Picture)


def cells(pic: Picture) -> list[list[tuple[Any, Any] | None]]:
    """Per cell of the widget: (top colour, bottom colour) of a half block, or None for anything else."""
    grid = []
    for y in range(pic.size.height):
        row: list[tuple[Any, Any] | None] = []
        for seg in pic.render_line(y):
            style = seg.style
            value = None
            if seg.text.startswith(HALF_BLOCK) and style and style.color and style.bgcolor:
                value = (tuple(style.color.triplet), tuple(style.bgcolor.triplet))
            row.extend([value] * len(seg.text))
        grid.append(row)
    return grid


def assert_shows_bars(pic: Picture) -> tuple[int, int]:
    """The four bars, in order, left to right across the drawn image; returns its (columns, rows)."""
    grid = cells(pic)
    drawn = [[c for c in row if c is not None] for row in grid]
    drawn = [row for row in drawn if row]
    assert drawn, "no half-block cell drawn"
    middle = drawn[len(drawn) // 2]
    width = len(middle)
    for i, colour in enumerate(QUANTISED):
        x = int((i + 0.5) * width / len(QUANTISED))  # the middle of bar i
        assert middle[x] == (colour, colour), f"bar {i} at column {x}: {middle[x]}"
    return width, len(drawn)


def on_screen(kiosk: Kiosk, text: str) -> bool:
    return "".join(text.split()) in "".join(kiosk.text.split())


# --- the live preview ---------------------------------------------------------------------------------


async def test_the_document_cameras_live_picture_shows_while_placing_the_paper(kiosk: Kiosk):
    await kiosk.show(capture_state("preview"))
    link = kiosk.app.link
    assert (link.doccam_session, link.still_session) == (SESSION, None)
    assert not picture(kiosk).has_image and on_screen(kiosk, "正在等待拍照台的画面…")
    await publish(kiosk, DOCCAM_PREVIEW_TOPIC, picture_payload(96, 72))
    await wait_until(kiosk.pilot, lambda: picture(kiosk).has_image, what="the live picture")
    pic = picture(kiosk)
    assert pic.image_size == (96, 72)
    columns, rows = assert_shows_bars(pic)
    assert abs(columns / (2 * rows) - 96 / 72) < 0.15  # square pixels: the paper keeps its shape
    assert not nothing_cut(kiosk), nothing_cut(kiosk)
    assert on_screen(kiosk, "请把材料平放在拍照台上") and on_screen(kiosk, "1  拍照")
    # Taking the picture: the frames stop being wanted; the last one stays while the shot is taken.
    await kiosk.show(capture_state("capturing"))
    assert link.doccam_session is None and link.still_session == SESSION
    assert picture(kiosk).has_image


async def test_live_frames_are_dropped_unread_outside_the_preview_and_a_silent_camera_is_said(
    small_kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch
):
    clock = HandClock()
    monkeypatch.setattr(CaptureScreen, "clock", staticmethod(clock.monotonic))
    kiosk = small_kiosk
    await kiosk.show(sample("documents"))
    dropped = kiosk.app.link.previews_dropped
    await publish(kiosk, DOCCAM_PREVIEW_TOPIC, picture_payload())
    await wait_until(kiosk.pilot, lambda: kiosk.app.link.previews_dropped > dropped, what="dropped unread")
    assert sum(kiosk.app.link.preview_rejected.values()) == 0
    await kiosk.show(capture_state("preview"))
    await publish(kiosk, DOCCAM_PREVIEW_TOPIC, picture_payload())
    await wait_until(kiosk.pilot, lambda: picture(kiosk).has_image, what="the live picture")
    clock.advance(1.9)
    await kiosk.pilot.pause(0.6)
    assert picture(kiosk).has_image
    clock.advance(0.2)  # 2 s without a frame: what shows is not the paper now
    await wait_until(kiosk.pilot, lambda: not picture(kiosk).has_image, what="the stale frame cleared")
    assert on_screen(kiosk, "正在等待拍照台的画面…")


# --- the photo at review ------------------------------------------------------------------------------


async def test_the_photo_is_shown_at_review_large_with_its_size_in_plain_words(kiosk: Kiosk):
    await kiosk.show(capture_state("capturing"))
    # The thumbnail comes while the shot is sealed, before the appliance says "review".
    await publish(kiosk, DOCCAM_STILL_TOPIC, still_payload(200, 150))
    await kiosk.pilot.pause(0.2)
    await kiosk.show(capture_state("review"))
    await wait_until(kiosk.pilot, lambda: picture(kiosk).has_image, what="the photo")
    pic = picture(kiosk)
    assert pic.image_size == (200, 150)
    columns, rows = assert_shows_bars(pic)
    width, height = kiosk.app.size
    if (width, height) != (80, 24):
        # The photo dominates: more than a third of the whole screen is the photo itself.
        assert columns * rows > 0.33 * width * height, (columns, rows)
    else:
        assert columns * rows > 0.25 * width * height, (columns, rows)
    # The biggest thing on the screen (containers aside) is the picture.
    things = [w for w in kiosk.app.screen.query("#body *") if not isinstance(w, Horizontal | Vertical)]
    assert max(things, key=lambda w: w.region.area) is pic
    assert on_screen(kiosk, "已拍好。照片清楚吗？") and on_screen(kiosk, "照片大小：197 KB")
    assert "校验码" not in kiosk.text and "9b0c" not in kiosk.text  # no checksum for a villager
    assert not nothing_cut(kiosk), nothing_cut(kiosk)
    await kiosk.press("1")
    assert (await kiosk.feed.next_intent("accept")).body["screen"] == "capture"


async def test_only_the_photo_under_review_is_shown_and_a_retake_drops_it(small_kiosk: Kiosk):
    kiosk = small_kiosk
    await kiosk.show(capture_state("capturing"))
    other = hashlib.sha256(b"an earlier shot").hexdigest()
    await publish(kiosk, DOCCAM_STILL_TOPIC, still_payload(sha256=other))
    await publish(kiosk, DOCCAM_STILL_TOPIC, still_payload(session_id="s-0000000000000000"))
    rejected = kiosk.app.link.preview_rejected
    await wait_until(kiosk.pilot, lambda: rejected["still.session"] == 1, what=f"{rejected}")
    await kiosk.show(capture_state("review"))
    assert not picture(kiosk).has_image  # not this photo's thumbnail
    assert on_screen(kiosk, "这里显示不出照片") and on_screen(kiosk, "照片大小：197 KB")
    await publish(kiosk, DOCCAM_STILL_TOPIC, still_payload())  # this one's, arriving late: drawn
    await wait_until(kiosk.pilot, lambda: picture(kiosk).has_image, what="the right photo")
    # Retake: back to the preview, the photo is gone; the next review without its thumbnail shows none.
    await kiosk.show(capture_state("preview"))
    assert not picture(kiosk).has_image
    await kiosk.show(capture_state("capturing"))
    await kiosk.show(capture_state("review"))
    assert not picture(kiosk).has_image and on_screen(kiosk, "这里显示不出照片")
    # Leaving the screen drops everything the screen held.
    await kiosk.show(sample("documents"))
    assert (kiosk.app.link.doccam_session, kiosk.app.link.still_session) == (None, None)


# --- nothing cut, both languages, every phase ---------------------------------------------------------


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
async def test_every_phase_fits_at_80x24_with_a_note_and_a_notice(small_kiosk: Kiosk, lang: str):
    kiosk = small_kiosk
    for phase in ("preview", "capturing", "review", "failed"):
        await kiosk.show(capture_state(phase, lang=lang, note="要清楚，四个角都拍进去"))
        if phase == "preview":
            await publish(kiosk, DOCCAM_PREVIEW_TOPIC, picture_payload())
            await wait_until(kiosk.pilot, lambda: picture(kiosk).has_image, what="live picture")
        assert not nothing_cut(kiosk), (phase, nothing_cut(kiosk))
        labels = kiosk.buttons()
        assert labels, phase
        for digit, label in labels.items():
            assert on_screen(kiosk, f"{digit}  {label}") or on_screen(kiosk, label), (phase, label)
        assert picture(kiosk).region.height >= 4, phase
        assert not kiosk.app.catalog.missing
        if lang == "en":  # no Chinese UI words: only the bus's data and the way back to Chinese
            text = kiosk.text
            for data in ("张三", "要清楚，四个角都拍进去", "中文"):
                text = text.replace(data, "")
            assert not any("\u4e00" <= ch <= "\u9fff" for ch in text), (phase, kiosk.text)


# --- hostile pictures ---------------------------------------------------------------------------------

HOSTILE = {
    "doccam": [
        ("size", picture_payload(161, 1)),
        ("size", picture_payload(1, 161)),
        ("pixels", picture_payload(rgb=base64.b64encode(bytes(96 * 72 * 3 - 3)).decode())),
        ("json", b'{"rgb": "' + b"A" * 120_000 + b'"}'),  # over the preview's payload limit
        ("json", b"[" * 50_000),
        ("field", picture_payload(seq="1")),
        ("base64", picture_payload(2, 2, rgb="!!!!" * 4)),
    ],
    "still": [
        ("field", picture_payload(200, 150)),  # no sha256: which photo is it?
        ("field", still_payload(sha256="9B0C" + "1" * 60)),
        ("field", still_payload(sha256=PHOTO_SHA + "0")),
        ("size", still_payload(241, 10)),
        ("json", b'{"rgb": "' + b"A" * 250_000 + b'"}'),
        ("pixels", still_payload(4, 4, rgb=base64.b64encode(bytes(47)).decode())),
    ],
}
LIMITS = {"doccam": DOCCAM_PICTURE, "still": STILL_PICTURE}


@pytest.mark.parametrize(
    ("kind", "reason", "payload"),
    [(kind, reason, payload) for kind, cases in HOSTILE.items() for reason, payload in cases],
    ids=[f"{kind}-{reason}-{i}" for kind, cases in HOSTILE.items() for i, (reason, _) in enumerate(cases)],
)
def test_parse_refuses_hostile_document_pictures_with_a_reason(kind: str, reason: str, payload: bytes):
    with pytest.raises(PreviewError) as caught:
        parse_preview(payload, LIMITS[kind])
    assert caught.value.reason == reason


def test_the_largest_valid_pictures_parse_and_keep_their_kind():
    live = parse_preview(picture_payload(160, 160), DOCCAM_PICTURE)
    assert (live.kind, live.w, live.h, live.sha256) == ("doccam", 160, 160, None)
    still = parse_preview(still_payload(240, 240), STILL_PICTURE)
    assert (still.kind, still.w, still.h, still.sha256) == ("still", 240, 240, PHOTO_SHA)
    assert still.rgb == bars(240, 240)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["session_id", "w", "h", "rgb", "seq", "sha256", "x"]),
        st.one_of(
            st.none(), st.booleans(), st.integers(-5, 300), st.text(max_size=40), st.lists(st.integers())
        ),
    ),
    st.sampled_from(["doccam", "still"]),
)
def test_any_json_object_is_a_picture_or_a_typed_refusal(body: dict[str, Any], kind: str):
    try:
        got = parse_preview(dumps(body), LIMITS[kind])
    except PreviewError as exc:
        assert exc.reason in {"json", "field", "size", "pixels", "base64"}
    else:
        assert len(got.rgb) == got.w * got.h * 3


async def test_hostile_document_pictures_are_counted_logged_once_and_keys_still_work(
    small_kiosk: Kiosk, caplog: pytest.LogCaptureFixture
):
    kiosk = small_kiosk
    caplog.set_level(logging.WARNING, logger="kiosk.ui.bus")
    await kiosk.show(capture_state("preview"))
    bad = [(DOCCAM_PREVIEW_TOPIC, p) for _, p in HOSTILE["doccam"]] * 3
    for topic, payload in bad:
        await publish(kiosk, topic, payload)
    await publish(kiosk, DOCCAM_PREVIEW_TOPIC, picture_payload())  # a good one after all that
    await wait_until(kiosk.pilot, lambda: picture(kiosk).has_image, what="a good frame after bad ones")
    rejected = kiosk.app.link.preview_rejected
    await wait_until(kiosk.pilot, lambda: sum(rejected.values()) == len(bad), what=f"{rejected}")
    assert set(rejected) == {f"doccam.{reason}" for reason, _ in HOSTILE["doccam"]}
    warnings = [r for r in caplog.records if r.name == "kiosk.ui.bus" and "doccam picture" in r.getMessage()]
    assert len(warnings) == len(set(rejected))  # once per reason, not once per frame
    assert all("AAAA" not in r.getMessage() for r in caplog.records)  # no pixels in the log
    await kiosk.press("1")
    assert (await kiosk.feed.next_intent("shoot")).body["screen"] == "capture"
