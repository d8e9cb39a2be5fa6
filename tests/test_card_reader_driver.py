"""Contract tests of the card reader driver over the SAM emulator on a real pty.

Read like a technician's bench script: present a card, expect the events; spoil the line, expect the
driver to recover; pull the cable, expect ``missing`` and recovery after replugging.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from drivers.card_reader.config import CardReaderConfig
from drivers.card_reader.driver import CardReader
from drivers.card_reader.identity import Identity
from drivers.card_reader.samples import SAMPLES
from drivers.card_reader.simulator import SamEmulator, control
from kiosk_core.backoff import equal_jitter as backoff_delay
from kiosk_core.health import HealthStatus

pytestmark = pytest.mark.timeout(30)

ZHANG_SAN = SAMPLES["zhang-san"].fields["id_number"]  # 330803199003071235
# Short timings so a fault costs milliseconds, not seconds; the logic is the same as in the field.
FAST = {
    "poll_interval_s": 0.03,
    "reply_timeout_s": 0.3,
    "read_timeout_s": 0.3,
    "fingerprint_read_timeout_s": 0.3,
    "address_timeout_s": 0.3,
    "reconnect_base_s": 0.05,
    "reconnect_cap_s": 0.3,
    "missing_after": 3,
    "degraded_after": 3,
    "removal_misses": 2,
}


class Events:
    """An EventSink that records and lets a test wait for the next event of a type."""

    def __init__(self) -> None:
        self.all: list[tuple[str, dict[str, Any]]] = []
        self._seen = asyncio.Condition()
        self._cursor: dict[str, int] = {}

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        async with self._seen:
            self.all.append((type, data))
            self._seen.notify_all()

    def of(self, type: str) -> list[dict[str, Any]]:
        return [d for t, d in self.all if t == type]

    async def next(self, type: str, within: float = 5.0) -> dict[str, Any]:
        """The next ``type`` event not yet returned by ``next``."""
        start = self._cursor.get(type, 0)

        def ready() -> bool:
            return len(self.of(type)) > start

        async with self._seen:
            await asyncio.wait_for(self._seen.wait_for(ready), within)
        self._cursor[type] = start + 1
        return self.of(type)[start]


async def until(predicate, within: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def emulator() -> Iterator[SamEmulator]:
    with SamEmulator(slow_reply_s=0.8, seed=1) as emu:
        yield emu


@pytest.fixture
async def reader(emulator: SamEmulator) -> AsyncIterator[tuple[CardReader, Events]]:
    reader = CardReader(CardReaderConfig(port=emulator.port, **FAST))
    events = Events()
    await reader.start(events.emit)
    await until(lambda: reader.health().status is HealthStatus.OK, what="reader ok")
    yield reader, events
    await reader.stop()


# --- the happy path ---------------------------------------------------------------------------------


async def test_present_the_sample_resident_card_then_remove_it(reader, emulator):
    reader, events = reader
    emulator.present_card("zhang-san")
    assert (await events.next("card.inserted"))["reader"] == "card_reader"
    read = await events.next("card.read")
    assert read["id_number_masked"] == "3308**********1235"
    assert read["valid"] is True and read["problems"] == []
    assert read["photo"] == "not decoded"
    assert read["card_type"] == "resident" and read["validity"]["to"] == "2040-03-15"
    assert read["attempts"] == 1 and read["read_ms"] < 1500
    # What the event carries to the fleet says what card it was, not who the villager is.
    public = {k: v for k, v in read.items() if not k.startswith("_")}
    text = json.dumps(public, ensure_ascii=False)
    assert ZHANG_SAN not in text and "张三" not in text and "1990" not in text
    assert not {"name", "sex", "birth", "nation", "nation_code", "address", "issuer"} & set(public)
    # the full identity only under _private, for in-process listeners
    private = read["_private"]
    assert private["nation"] == "汉" and private["name"] == "张三" and private["sex"] == "男"
    assert private["id_number"] == ZHANG_SAN and len(private["photo_wlt"]) == 1024
    assert isinstance(private["identity"], Identity) and private["identity"].valid

    emulator.remove_card()
    assert (await events.next("card.removed"))["reason"] == "removed"
    assert reader.health().status is HealthStatus.OK
    assert reader.inventory()["sam_id"] == "05.01-20241001-0000330803-0012345678"
    assert [t for t, _ in events.all] == ["card.inserted", "card.read", "card.removed"]


async def test_every_sample_card_type_is_read(reader, emulator):
    reader, events = reader
    for key in ("wang-fang", "hk-permit", "foreigner-old", "foreigner-2023"):
        emulator.present_card(key)
        read = await events.next("card.read")
        assert read["card_type"] == SAMPLES[key].card_type.value and read["valid"], read["problems"]
        assert read["_private"]["id_number"] == SAMPLES[key].fields["id_number"]
        emulator.remove_card()
        await events.next("card.removed")


async def test_card_with_a_wrong_check_digit_is_never_a_valid_identity(reader, emulator):
    reader, events = reader
    emulator.present_card("bad-checksum")
    read = await events.next("card.read")
    assert read["valid"] is False
    assert read["problems"] == ["ID number check digit does not match (GB 11643, ISO 7064 MOD 11-2)"]


async def test_a_card_left_on_the_reader_is_read_once(reader, emulator):
    reader, events = reader
    emulator.present_card("hk-permit")
    await events.next("card.read")
    polls = emulator.requests["find card"]
    await until(lambda: emulator.requests["find card"] >= polls + 10, what="ten more polls")
    assert len(events.of("card.read")) == 1 and emulator.requests["read text photo"] == 1


# --- faults on the line -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["noise", "bad_checksum", "truncated", "slow", "silence"])
@pytest.mark.parametrize("target", ["find", "read"])
async def test_the_driver_recovers_from_a_spoilt_reply(reader, emulator, fault, target):
    reader, events = reader
    emulator.inject(fault, count=1, command=target)
    emulator.present_card("zhang-san")
    read = await events.next("card.read")
    assert read["id_number_masked"] == "3308**********1235" and read["valid"]
    assert emulator.faults_applied[fault] == 1
    expected = {
        "noise": "noise_bytes",
        "bad_checksum": "card_reader.bad_checksum",
        "truncated": "card_reader.truncated",
        "slow": "card_reader.no_reply",
        "silence": "card_reader.no_reply",
    }[fault]
    assert reader.wire_stats[expected] >= 1, reader.wire_stats
    # noise is skipped inside one exchange; every other fault costs the read at least one more attempt
    # (a slow reply may cost two: it is still arriving while the retry's find waits)
    if target == "read":
        assert read["attempts"] == 1 if fault == "noise" else read["attempts"] >= 2
    assert reader.stats["internal_error"] == 0
    await until(lambda: reader.health().status is HealthStatus.OK, what="health ok again")


async def test_a_late_reply_is_skipped_not_taken_for_the_next_answer(reader, emulator):
    reader, events = reader
    emulator.inject("slow", count=1, command="select")
    emulator.present_card("foreigner-old")
    read = await events.next("card.read")
    assert read["card_type"] == "foreign_permanent_2017" and read["valid"]
    await until(lambda: reader.wire_stats["card_reader.unexpected_reply"] >= 1, what="late reply skipped")


async def test_a_card_that_cannot_be_read_gives_card_error_then_reads_when_presented_again(reader, emulator):
    reader, events = reader
    emulator.inject("read_failed", count=3, command="read")
    emulator.present_card("zhang-san")
    error = await events.next("card.error")
    assert error["code"] == "card_reader.read_failed" and error["attempts"] == 3
    assert "0x41" in error["message"] and "try again" in error["message"]
    assert not events.of("card.read")
    emulator.remove_card()
    await events.next("card.removed")
    emulator.present_card("zhang-san")
    assert (await events.next("card.read"))["valid"]


async def test_repeated_corruption_degrades_health_then_recovers(reader, emulator):
    reader, events = reader
    emulator.inject("bad_checksum", count=1000)
    await until(lambda: reader.health().status is HealthStatus.DEGRADED, what="degraded")
    reason = reader.health().reason
    assert "bad checksum" in reason and "failed polls in a row" in reason
    assert emulator.port in reason and "check the reader's cable" in reason
    emulator.clear_faults()
    await until(lambda: reader.health().status is HealthStatus.OK, what="ok after the noise stops")


async def test_a_silent_reader_is_missing_with_an_actionable_reason(reader, emulator):
    reader, events = reader
    emulator.inject("silence", count=1000)
    await until(lambda: reader.health().status is HealthStatus.MISSING, what="missing")
    assert reader.health().reason.startswith(f"no reply from the card reader on {emulator.port}")
    assert "check the USB cable" in reader.health().reason
    emulator.clear_faults()
    await until(lambda: reader.health().status is HealthStatus.OK, what="ok after it answers again")
    assert reader.stats["connects"] >= 2


async def test_a_wrong_baudrate_is_reported_as_such(emulator):
    reader = CardReader(CardReaderConfig(port=emulator.port, baudrate=9600, **FAST))
    await reader.start(Events().emit)
    try:
        await until(lambda: "never form a frame" in reader.health().reason, what="baud rate diagnosis")
        assert reader.health().status is HealthStatus.MISSING
        assert "baudrate 9600" in reader.health().reason and "115200" in reader.health().reason
        assert emulator.faults_applied["baudrate_mismatch"] >= 1
    finally:
        await reader.stop()


async def test_a_reader_that_halts_a_read_card_reads_it_once():
    # Some SAM readers answer "no card" once a card was read, until it is lifted: the driver then
    # reports card.removed while the card still lies there, and must not read it again and again.
    with SamEmulator(halt_after_read=True) as emulator:
        reader = CardReader(CardReaderConfig(port=emulator.port, **FAST))
        events = Events()
        await reader.start(events.emit)
        try:
            emulator.present_card("wang-fang")
            await events.next("card.read")
            await events.next("card.removed")
            polls = emulator.requests["find card"]
            await until(lambda: emulator.requests["find card"] >= polls + 10, what="ten more polls")
            assert len(events.of("card.read")) == 1
            emulator.remove_card()
            emulator.present_card("wang-fang")
            await events.next("card.read")
        finally:
            await reader.stop()


async def test_a_sam_failing_its_self_test_is_degraded_until_it_recovers(emulator):
    from drivers.card_reader.protocol import SamResponse

    for _ in range(3):
        emulator.reply_with(SamResponse(0, 0, 0x60).encode())
    reader = CardReader(CardReaderConfig(port=emulator.port, **FAST))
    await reader.start(Events().emit)
    try:
        await until(lambda: reader.health().status is HealthStatus.DEGRADED, what="degraded")
        assert "0x60" in reader.health().reason and "power-cycle" in reader.health().reason
        await until(lambda: reader.health().status is HealthStatus.OK, what="ok once the SAM passes")
    finally:
        await reader.stop()


# --- unplug ---------------------------------------------------------------------------------------------


async def test_unplug_with_a_card_then_replug(reader, emulator):
    reader, events = reader
    emulator.present_card("zhang-san")
    await events.next("card.read")
    emulator.unplug()
    removed = await events.next("card.removed")
    assert removed["reason"] == "reader_lost"
    await until(lambda: reader.health().status is HealthStatus.MISSING, what="missing")
    assert emulator.port in reader.health().reason and "check" in reader.health().reason
    await asyncio.sleep(0.3)  # a few reconnect attempts against the absent port
    emulator.replug()
    await until(lambda: reader.health().status is HealthStatus.OK, what="ok after replug")
    # the card is still on the reader: it is announced and read again
    await events.next("card.inserted")
    assert (await events.next("card.read"))["valid"]
    assert reader.stats["lost"] == 1 and reader.stats["internal_error"] == 0


async def test_reader_absent_at_start_is_missing_and_start_returns_at_once(tmp_path):
    reader = CardReader(CardReaderConfig(port=str(tmp_path / "ttyUSB9"), **FAST))
    events = Events()
    await asyncio.wait_for(reader.start(events.emit), 1)
    await until(lambda: "not found" in reader.health().reason, what="missing reason")
    assert reader.health().status is HealthStatus.MISSING
    assert "ttyUSB9" in reader.health().reason and "plugged in" in reader.health().reason
    await reader.stop()
    await reader.stop()  # idempotent
    assert reader.health().reason == "stopped"


def test_backoff_grows_with_jitter_and_is_capped():
    import random

    rng = random.Random(3)
    delays = [backoff_delay(a, 0.5, 15, rng) for a in range(12)]
    for a, d in enumerate(delays):
        ceiling = min(15, 0.5 * 2**a)
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 15 and len({round(d, 6) for d in delays}) == len(delays)


# --- the sim backend, as `kiosk demo` and `kiosk sim` use it -------------------------------------------------


async def test_sim_backend_owns_its_emulator_on_a_real_pty():
    cfg = CardReaderConfig(backend="sim", sim={"initial_card": "foreigner-2023"}, **FAST)
    reader = CardReader(cfg)
    events = Events()
    await reader.start(events.emit)
    try:
        read = await events.next("card.read")
        assert (
            read["card_type"] == "foreign_permanent_2023" and read["id_number_masked"] == "9337**********0027"
        )
        sim = reader.simulator
        assert sim is not None and os.path.realpath(sim.port).startswith("/dev/pts/")
        assert control(sim, "remove", {})["card"] is None
        await events.next("card.removed")
        control(sim, "present", {"card": "hk-permit"})
        assert (await events.next("card.read"))["card_type"] == "hk_macao_taiwan_permit"
        with pytest.raises(ValueError, match="zhang-san"):
            control(sim, "present", {"card": "nobody"})
        with pytest.raises(ValueError, match="noise"):
            control(sim, "inject", {"fault": "lightning"})
        assert "zhang-san" in control(sim, "samples", {})["samples"]
        port = sim.port
    finally:
        await reader.stop()
    assert not os.path.exists(port)


async def test_fingerprint_and_additional_address_options(emulator):
    cfg = CardReaderConfig(port=emulator.port, fingerprint=True, additional_address=True, **FAST)
    reader = CardReader(cfg)
    events = Events()
    await reader.start(events.emit)
    try:
        emulator.present_card("wang-fang")
        read = await events.next("card.read")
        # An address (also the additional one) is personal: in-process only.
        assert "additional_address" not in read
        assert read["_private"]["additional_address"] == "浙江省衢州市衢江区新村5号"
        assert read["_private"]["fingerprint"] == b""
        emulator.remove_card()
        await events.next("card.removed")
        emulator.present_card("zhang-san")
        read = await events.next("card.read")
        assert "additional_address" not in read and len(read["_private"]["fingerprint"]) == 1024
        assert emulator.requests["read text photo fingerprint"] == 2
    finally:
        await reader.stop()


# --- personal data in logs ---------------------------------------------------------------------------------


def _forms_of(number: str) -> list[str]:
    ucs2 = number.encode("utf-16-le")
    return [number, ucs2.hex(), ucs2.hex(" "), ucs2.hex(" ").upper(), ucs2.hex().upper(), repr(ucs2)]


async def test_a_full_read_never_logs_the_unmasked_number(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    reader = CardReader(CardReaderConfig(port=emulator.port, **FAST))
    events = Events()
    await reader.start(events.emit)
    try:
        emulator.inject("bad_checksum", command="read")
        emulator.inject("truncated", command="read")
        emulator.present_card("zhang-san")
        read = await events.next("card.read")
        logging.getLogger("test").info(
            "event %s identity %r",
            {k: v for k, v in read.items() if k != "_private"},
            read["_private"]["identity"],
        )
        emulator.remove_card()
        await events.next("card.removed")
        emulator.present_card("bad-checksum")
        await events.next("card.read")
    finally:
        await reader.stop()
    text = caplog.text
    assert "3308**********1235" in text  # the masked form is what gets logged
    assert "card read but its data failed validation" in text
    for number in (ZHANG_SAN, SAMPLES["bad-checksum"].fields["id_number"]):
        for form in _forms_of(number):
            assert form not in text, form
