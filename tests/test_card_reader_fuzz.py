"""Hostile bytes from the reader: random and mutated replies thrown at the command layer and the driver.

Whatever arrives, every exchange ends, in bounded time, in a typed ``CardReaderError`` or a valid
result; the driver never crashes, never reports a broken card as valid, and reads a good card after.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_card_reader_driver import until

from drivers.card_reader.config import CardReaderConfig
from drivers.card_reader.driver import CardReader
from drivers.card_reader.errors import CardReaderError
from drivers.card_reader.identity import parse_identity
from drivers.card_reader.protocol import PREAMBLE, SamResponse, encode_card_blocks
from drivers.card_reader.sam import SamLink
from drivers.card_reader.samples import SAMPLES
from drivers.card_reader.simulator import SamEmulator
from drivers.card_reader.transport import SerialTransport
from kiosk_core.health import HealthStatus

GOOD_READ = SamResponse(
    0, 0, 0x90, encode_card_blocks(SAMPLES["zhang-san"].blocks(), with_fingerprint=False)
).encode()
GOOD_FIND = SamResponse(0, 0, 0x9F, bytes(4)).encode()
GOOD_SELECT = SamResponse(0, 0, 0x90, bytes(8)).encode()


@st.composite
def hostile_replies(draw, good: bytes) -> bytes:
    """Random bytes, or a good reply mutated: bit flips, cuts, insertions, fake preambles, lengths."""
    kind = draw(st.sampled_from(["random", "mutated", "fake_header", "sw3"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "fake_header":
        length = draw(st.integers(0, 0xFFFF))
        return (
            draw(st.binary(max_size=20)) + PREAMBLE + length.to_bytes(2, "big") + draw(st.binary(max_size=50))
        )
    if kind == "sw3":
        return SamResponse(0, 0, draw(st.integers(0, 255)), draw(st.binary(max_size=20))).encode()
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif len(data) > 7:
            data[5:7] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        if not data:
            break
    return bytes(data)


class ScriptedTransport:
    """An in-memory line for fast fuzzing of the command layer: each write is answered from a script.

    The contract tests and the pty fuzz below use real ptys; this double only lets hypothesis run
    hundreds of exchanges per second.
    """

    port = "/dev/fuzz"

    def __init__(self, replies: list[bytes], chunk: int) -> None:
        self.replies = list(replies)
        self.chunk = chunk
        self.pending = b""

    def open(self) -> None: ...
    def close(self) -> None: ...

    def write(self, data: bytes) -> None:
        self.pending += self.replies.pop(0) if self.replies else b""

    def read_some(self, timeout: float) -> bytes:
        if not self.pending:
            time.sleep(min(timeout, 0.002))
            return b""
        out, self.pending = self.pending[: self.chunk], self.pending[self.chunk :]
        return out

    def discard_input(self) -> None:
        self.pending = b""


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 300))
def test_command_layer_ends_in_a_typed_error_or_a_valid_result(data, chunk):
    replies = [
        data.draw(st.one_of(st.just(GOOD_FIND), hostile_replies(GOOD_FIND))),
        data.draw(st.one_of(st.just(GOOD_SELECT), hostile_replies(GOOD_SELECT))),
        data.draw(st.one_of(st.just(GOOD_READ), hostile_replies(GOOD_READ))),
    ]
    # A fast line so a timeout costs milliseconds: the fuzz is about outcomes, not timing.
    link = SamLink(ScriptedTransport(replies, chunk), baudrate=10_000_000, reply_timeout_s=0.01)
    started = time.monotonic()
    try:
        blocks = link.read_card()
        # anything that passed framing, checksum and length checks is a full card image...
        assert len(blocks.text) == 256 and len(blocks.photo) <= 1024
        # ...and its text either lays out (valid or with problems) or is a typed error
        identity = parse_identity(blocks.text)
        assert identity.valid is (not identity.problems)
    except CardReaderError:
        pass
    assert time.monotonic() - started < 1.0


@pytest.fixture(scope="module")
def pty_link():
    with SamEmulator(pace=False, initial_card="zhang-san") as emulator:
        transport = SerialTransport(emulator.port)
        transport.open()
        try:
            yield emulator, SamLink(transport, reply_timeout_s=0.05)
        finally:
            transport.close()


@pytest.mark.timeout(60)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=hostile_replies(GOOD_FIND))
def test_hostile_bytes_over_the_pty_end_typed_and_the_link_recovers(pty_link, raw):
    emulator, link = pty_link
    emulator.reply_with(raw)
    try:
        link.find_card()
    except CardReaderError:
        pass
    # the very next exchange is clean again: nothing of the hostile reply leaks into it
    time.sleep(0.01)
    assert link.find_card() is True


@pytest.mark.timeout(60)
@settings(max_examples=8, deadline=None)
@given(st.lists(st.one_of(hostile_replies(GOOD_FIND), hostile_replies(GOOD_READ)), min_size=1, max_size=6))
def test_the_driver_survives_hostile_replies_then_reads_a_good_card(replies):
    async def scenario() -> None:
        with SamEmulator(pace=False) as emulator:
            events: list[tuple[str, dict]] = []

            async def emit(type: str, data: dict) -> None:
                events.append((type, data))

            reader = CardReader(
                CardReaderConfig(
                    port=emulator.port,
                    poll_interval_s=0.01,
                    reply_timeout_s=0.05,
                    read_timeout_s=0.05,
                    fingerprint_read_timeout_s=0.05,
                    address_timeout_s=0.05,
                    reconnect_base_s=0.02,
                    reconnect_cap_s=0.05,
                )
            )
            await reader.start(emit)
            try:
                emulator.present_card("zhang-san")
                for raw in replies:
                    emulator.reply_with(raw)
                await until(lambda: emulator.faults_applied["raw"] == len(replies), 10, "the storm to pass")
                # During the storm a reply with two compensating corruptions can pass the XOR checksum:
                # such a read may carry wrong text, but it is still a well-formed event.
                for t, d in events:
                    if t == "card.read":
                        assert d["valid"] is (not d["problems"]) and "_private" in d
                # After it: take the card off, put it back, and it reads correctly.
                emulator.remove_card()
                await until(lambda: not reader.card_present, 10, "card.removed")
                events.clear()
                emulator.present_card("zhang-san")
                await until(lambda: any(t == "card.read" for t, _ in events), 10, "card.read")
                reads = [d for t, d in events if t == "card.read"]
                assert len(reads) == 1 and reads[0]["valid"]
                assert reads[0]["id_number_masked"] == "3308**********1235"
                assert reader.stats["internal_error"] == 0 and not reader._task.done()
                assert reader.health().status is HealthStatus.OK
            finally:
                await reader.stop()

    asyncio.run(scenario())


# --- the 2023 foreign card layout and the USB framing --------------------------------------------------
# (layout: Johann356/readinfo PCSCGetData.h, tagIDCardInfor2023; USB device: pyusb/pyusb usb/core.py)

GOOD_READ_2023 = SamResponse(
    0, 0, 0x90, encode_card_blocks(SAMPLES["foreigner-2023"].blocks(), with_fingerprint=False)
).encode()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([8, 16, 64, 512]))
def test_hostile_2023_reads_over_usb_packets_end_typed_or_valid(data, packet):
    from drivers.card_reader.identity import CardType
    from drivers.card_reader.simulator import SamUsbDevice
    from drivers.card_reader.transport import UsbTransport

    emulator = SamEmulator(pace=False, initial_card="foreigner-2023")
    device = SamUsbDevice(emulator, packet=packet)
    transport = UsbTransport(device.idVendor, device.idProduct, api=device.api())
    try:
        transport.open()
        for good in (GOOD_FIND, GOOD_SELECT, GOOD_READ_2023):
            emulator.reply_with(data.draw(st.one_of(st.just(good), hostile_replies(good))))
        link = SamLink(transport, reply_timeout_s=0.01)
        started = time.monotonic()
        try:
            identity = parse_identity(link.read_card().text)
            assert identity.valid is (not identity.problems)
            if identity.valid and identity.card_type is CardType.FOREIGN_2023:
                # (a corruption the XOR checksum cannot see may change text; never the rules it passed)
                assert identity.id_number.startswith("9") and len(identity.nationality) == 3
        except CardReaderError:
            pass
        assert time.monotonic() - started < 2.0
    finally:
        transport.close()
        emulator.stop()
