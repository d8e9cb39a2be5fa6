"""Personal data minimised at the edge, through real brokers.

A technician's script: "producers on the device publish events with a villager's ID number buried in
nested fields, lists, keys and sentences; the platform receives every one of them masked
(3308**********123X), while an order number and a phone number that only look like one arrive as they
were. Put the sample resident card on the reader: card.read reaches the platform with the card type
and the masked number, and without the name, address, birth date, sex, nation or issuer."
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_config
from fleet_helpers import Platform, produce

from appliance.daemon import Appliance
from drivers.card_reader.samples import SAMPLES
from kiosk_core.localbus import LocalBus
from kiosk_core.logs import check_digit, mask_id_numbers, mask_id_numbers_in
from sim.mosquitto import Mosquitto

ZHANG = SAMPLES["zhang-san"].fields["id_number"]  # 330803199003071235
LI = "11010519491231002X"  # a valid check character X
FIRST_GEN = "330803900307123"  # 15 digits: 1990-03-07, before 1999
ORDER = ZHANG[:17] + ("0" if ZHANG[-1] != "0" else "1")  # an order number: wrong check digit
PHONE = "13800138000"
NOT_FIRST_GEN = "330803901307123"  # month 13: no birth date, no ID number


def test_the_numbers_of_this_script_are_what_they_claim():
    assert check_digit(ZHANG[:17]) == ZHANG[-1] and check_digit(LI[:17]) == "X"
    assert check_digit(ORDER[:17]) != ORDER[-1] and len(ORDER) == 18


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"身份证号{ZHANG}。", "身份证号3308**********1235。"),
        (f"{LI}", "1101**********002X"),
        (f"{LI.lower()}", "1101**********002x"),
        (f"id={ZHANG},tel={PHONE}", f"id=3308**********1235,tel={PHONE}"),
        (f"order {ORDER}", f"order {ORDER}"),  # wrong check digit: not an ID number
        (f"old card {FIRST_GEN}", "old card 3308*******7123"),
        (f"ref {NOT_FIRST_GEN}", f"ref {NOT_FIRST_GEN}"),
        (f"SO{ZHANG}", f"SO{ZHANG}"),  # part of a longer letter/digit run
        (f"{ZHANG}7", f"{ZHANG}7"),
        ("３３０８０３１９９００３０７１２３５", "３３０８**********１２３５"),  # full-width digits (an IME)
    ],
)
def test_masking_of_text(text: str, expected: str):
    assert mask_id_numbers(text) == expected


def test_masking_walks_keys_values_lists_and_integers():
    value = {ZHANG: [ZHANG, {"deep": [f"x {LI} y"]}], "n": int(ZHANG), "ok": 42, "f": 1.5, "b": True}
    assert mask_id_numbers_in(value) == {
        "3308**********1235": ["3308**********1235", {"deep": ["x 1101**********002X y"]}],
        "n": "3308**********1235",
        "ok": 42,
        "f": 1.5,
        "b": True,
    }


async def test_events_from_local_producers_reach_the_platform_masked(
    kiosk: Appliance, platform: Platform, bus_broker: Mosquitto
):
    data = {
        "applicant": {"id_number": ZHANG, "household": [{"id": LI}, {"id": FIRST_GEN}]},
        "note": f"村民 {ZHANG} 代办, 联系电话 {PHONE}, 订单号 {ORDER}",
        "lists": [[ZHANG], [f"a {LI}"]],
        ZHANG: "a key too",
        "order_no": ORDER,
        "phone": PHONE,
        "ref": NOT_FIRST_GEN,
    }
    await produce(
        bus_broker.port,
        [
            {"type": "test.pii", "data": data, "id": "pii-1", "producer": "ui"},
            # A type that carries a number is a string leaving the device too.
            {"type": f"test.{ZHANG}", "data": {}, "id": "pii-2", "producer": "ui"},
        ],
    )
    await platform.wait_for(lambda: len(platform.events("test.")) >= 2, what="both events")
    got = {e["type"]: e["data"] for e in platform.events("test.")}
    assert got["test.pii"] == {
        "applicant": {
            "id_number": "3308**********1235",
            "household": [{"id": "1101**********002X"}, {"id": "3308*******7123"}],
        },
        "note": f"村民 3308**********1235 代办, 联系电话 {PHONE}, 订单号 {ORDER}",
        "lists": [["3308**********1235"], ["a 1101**********002X"]],
        "3308**********1235": "a key too",
        "order_no": ORDER,
        "phone": PHONE,
        "ref": NOT_FIRST_GEN,
    }
    assert "test.3308**********1235" in got
    raw = b"".join(m.payload for _, _, m in platform.messages)
    for number in (ZHANG, LI, FIRST_GEN):
        assert number.encode() not in raw, f"{number} left the device"


async def test_the_appliances_own_events_are_masked_on_the_fleet_and_the_local_feed(
    kiosk: Appliance, platform: Platform, bus_broker: Mosquitto
):
    feed: list[dict] = []
    probe = LocalBus("127.0.0.1", bus_broker.port, name="feed-probe")
    probe.subscribe("kiosk/local/feed/#", lambda m: feed.append(json.loads(m.payload)))
    await probe.start()
    try:
        await kiosk.emit("test.own", {"why": f"failed for {ZHANG}", "_private": {"id_number": ZHANG}})
        event = (await platform.wait_for(lambda: platform.events("test.own"), what="test.own"))[0]
        assert event["data"] == {"why": "failed for 3308**********1235"}
        await platform.wait_for(lambda: [f for f in feed if f["type"] == "test.own"], what="the feed")
        assert ZHANG not in json.dumps(feed)
    finally:
        await probe.stop()


async def test_a_non_finite_number_in_an_event_arrives_as_null(kiosk: Appliance, platform: Platform):
    await kiosk.emit("test.sensor", {"temperature_c": float("nan"), "ok": 1.5})
    event = (await platform.wait_for(lambda: platform.events("test.sensor"), what="test.sensor"))[0]
    assert event["data"] == {"temperature_c": None, "ok": 1.5}


@pytest.mark.timeout(60)
async def test_card_read_on_the_platform_carries_no_name_address_or_birth(
    tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto, platform: Platform
):
    config = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
        extra='\n[drivers.card_reader]\nbackend = "sim"\n\n[drivers.card_reader.sim]\ninitial_card = "zhang-san"\n',
    )
    app = Appliance(config)
    await app.start()
    try:
        read = (await platform.wait_for(lambda: platform.events("card.read"), what="card.read"))[0]
        assert read["data"]["card_type"] == "resident"
        assert read["data"]["id_number_masked"] == "3308**********1235" and read["data"]["valid"] is True
        assert not {"name", "sex", "birth", "nation", "nation_code", "address", "issuer"} & set(read["data"])
        await platform.wait_for(lambda: platform.events("session."), what="the session started")
        fields = SAMPLES["zhang-san"].fields
        raw = b"".join(m.payload for _, _, m in platform.messages)
        for personal in (fields["name"], fields["address"], fields["issuer"], "1990-03-07", ZHANG):
            assert personal.encode() not in raw, f"{personal} left the device"
        # The session, in process, still knows who is at the kiosk (for session.identity.get).
        session = next(s for s in app.subsystems if s.name == "session")
        assert session.machine.session is not None and session.machine.session.name == "张三"
        assert session.machine.session.card_data["address"] == fields["address"]
    finally:
        await app.stop()
