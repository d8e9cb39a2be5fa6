"""The session's in-process card signals reaching the hardware: ``session.card.left`` beeps the
buzzer (gpiozero's mock pins record it), ``session.card.read_again`` has the card reader read the card
lying on it once more (the SAM emulator on a real pty)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from test_peripherals import CARD_READER, DRIVERS, TestContext, load, wait_health

from appliance.peripherals import Peripherals
from appliance.session.flows.card import CARD_LEFT, READ_CARD_AGAIN
from kiosk_core.health import HealthStatus

pytestmark = pytest.mark.timeout(30)


async def test_a_card_left_on_the_reader_beeps_the_buzzer(tmp_path: Path):
    _, cfg = load(tmp_path, DRIVERS)
    ctx = TestContext(cfg, tmp_path)
    subsystem = Peripherals(ctx)
    await subsystem.start()
    try:
        await wait_health(subsystem, "gpio", HealthStatus.OK)
        pin = subsystem.devices["gpio"].buzzer.pin
        pin.clear_states()
        await ctx.deliver(CARD_LEFT, {"reminder": 1})
        deadline = time.monotonic() + 2
        while sum(1 for s in pin.states if s.state) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sum(1 for s in pin.states if s.state) == 2  # two short beeps
        await ctx.deliver("session.card.something_else", {})  # nothing else makes a sound
    finally:
        await subsystem.stop()


async def test_read_again_reads_the_card_already_on_the_reader(tmp_path: Path):
    _, cfg = load(tmp_path, CARD_READER)
    ctx = TestContext(cfg, tmp_path)
    subsystem = Peripherals(ctx)
    await subsystem.start()
    try:
        await wait_health(subsystem, "card_reader", HealthStatus.OK)
        reader = subsystem.devices["card_reader"]
        assert reader.read_again() is False  # no card: nothing to read
        await ctx.rpc["sim"]["card"]({"action": "present", "card": "zhang-san"})
        await ctx.wait_event("card.read", within_s=5)
        await asyncio.sleep(0.5)
        assert ctx.types().count("card.read") == 1  # a card lying there is read once
        await ctx.deliver(READ_CARD_AGAIN, {})
        deadline = time.monotonic() + 5
        while ctx.types().count("card.read") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reads = [d for t, d in ctx.events if t == "card.read"]
        assert len(reads) == 2 and reads[1]["id_number_masked"] == reads[0]["id_number_masked"]
        assert "card.removed" not in ctx.types()  # it never had to be lifted
    finally:
        await subsystem.stop()
