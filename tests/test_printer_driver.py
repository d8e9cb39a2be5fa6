"""The receipt printer driver against the simulator on a real pty (the serial transport), and against a
USB device behind the thin pyusb adapter: what comes out on paper, and what no paper, an open cover and
a switched-off printer do to a print job, health and events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.printer import errors as e
from drivers.printer.config import PrinterConfig
from drivers.printer.driver import Printer
from drivers.printer.protocol import build_receipt
from drivers.printer.simulator import PrinterSimulator, find_font
from drivers.printer.transport import SerialTransport, UsbApi, UsbTransport
from kiosk_core.errors import ConfigError
from kiosk_core.health import HealthStatus
from tests.test_printer_protocol import RECEIPT, URL  # one sample receipt for the printer's tests

pytestmark = pytest.mark.timeout(30)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, type: str, data: dict[str, Any]) -> None:
        self.seen.append((type, data))

    def types(self) -> list[str]:
        return [t for t, _ in self.seen]


@pytest.fixture
async def printer(tmp_path: Path):
    cfg = PrinterConfig(
        backend="sim", status_timeout_s=0.3, poll_interval_s=60, sim={"out_dir": str(tmp_path)}
    )
    p = Printer(cfg)
    events = Events()
    await p.start(events)
    yield p, events
    await p.stop()


def qr_in_image(image: Any, data: str, module: int = 6) -> bool:
    """True when the image holds the QR symbol of ``data`` (segno's matrix, error M) module by module."""
    matrix = [list(row) for row in segno.make(data, error="m", boost_error=False).matrix_iter(border=0)]
    n = len(matrix)
    x0 = (image.width - (n + 8) * module) // 2 + 4 * module
    px = image.load()
    for y in range(image.height - n * module):
        if any(px[x0 + dx, y] for dx in range(7 * module)):  # the finder's top edge: 7 dark modules
            continue
        if all(
            (px[x0 + c * module + module // 2, y + r * module + module // 2] == 0) == bool(matrix[r][c])
            for r in range(n)
            for c in range(n)
        ):
            return True
    return False


async def test_a_receipt_comes_out_with_its_text_and_a_qr_code_of_the_progress_url(printer, tmp_path: Path):
    p, events = printer
    assert (await p.check()).status is HealthStatus.OK
    reply = await p.print_receipt(RECEIPT, job="receipt", session_id="s-1")
    assert reply["bytes"] == len(build_receipt(RECEIPT))
    sim = p.simulator
    assert sim is not None and sim.wait_printed(1)
    out = sim.receipts[-1]
    assert out.path == tmp_path / "receipt-0001.png" and out.path.exists()
    assert out.image.width == 384
    assert out.qr_data == [URL]
    assert "申请编号：SQ330803-20261121-0007" in out.lines and "申请人：张*" in out.lines
    assert qr_in_image(out.image, URL)
    assert not qr_in_image(out.image, URL.replace("0007", "0008"))
    assert events.types() == ["printer.printed"]
    assert events.seen[0][1] == {
        "printer": "printer",
        "job": "receipt",
        "session_id": "s-1",
        "bytes": reply["bytes"],
    }
    assert p.inventory()["images"] == str(tmp_path)


@pytest.mark.skipif(
    find_font() is None, reason="no CJK font (scripts/dev.sh setup installs fonts-wqy-zenhei)"
)
async def test_chinese_text_is_drawn_as_glyphs_not_boxes(printer):
    p, _ = printer
    await p.print_receipt(RECEIPT)
    assert p.simulator.wait_printed(1)
    image = p.simulator.receipts[-1].image
    # The title (double size) and the site line: rows of ink, with a different shape per character.
    top = image.crop((0, 0, image.width, 48))
    assert top.getbbox() is not None
    glyphs = [top.crop((x, 0, x + 48, 48)).tobytes() for x in range(96, 288, 48)]
    assert len(set(glyphs)) == 4  # 办 事 回 执: four different glyphs


@pytest.mark.parametrize(
    ("fault", "error", "code", "health"),
    [
        ("no_paper", e.PaperOut, "printer.no_paper", HealthStatus.DEGRADED),
        ("cover_open", e.CoverOpen, "printer.cover_open", HealthStatus.DEGRADED),
        ("offline", e.PrinterOffline, "printer.offline", HealthStatus.MISSING),
    ],
)
async def test_a_fault_fails_the_job_quickly_reports_it_and_clears(printer, fault, error, code, health):
    p, events = printer
    p.simulator.inject(fault)
    started = time.monotonic()
    with pytest.raises(error):
        await p.print_receipt(RECEIPT, job="appointment", session_id="s-2")
    assert time.monotonic() - started < 3 * 0.3 + 1.5  # bounded by the status timeout, not the print timeout
    assert p.simulator.printed == 0
    assert p.health().status is health and p.health().reason
    assert events.types() == ["printer.failed"]
    failed = events.seen[0][1]
    assert failed["code"] == code and failed["job"] == "appointment" and failed["session_id"] == "s-2"
    p.simulator.clear()
    assert (await p.check()).status is HealthStatus.OK
    await p.print_receipt(RECEIPT)
    assert p.simulator.wait_printed(1)


async def test_paper_running_low_still_prints_and_says_so(printer):
    p, _ = printer
    p.simulator.inject("near_end")
    reply = await p.print_receipt(RECEIPT)
    assert reply["paper_near_end"] is True
    assert p.health().status is HealthStatus.DEGRADED and "running low" in p.health().reason


async def test_a_printer_that_hangs_never_holds_the_caller_past_the_print_timeout(tmp_path: Path):
    class Stuck(SerialTransport):
        def write(self, data: bytes) -> None:
            if len(data) > 3:  # the receipt, not a status request: the printer holds the line
                time.sleep(2)
            super().write(data)

    with PrinterSimulator() as sim:
        cfg = PrinterConfig(backend="serial", port=sim.port, print_timeout_s=0.8, poll_interval_s=60)
        p = Printer(cfg, transport=Stuck(sim.port, 9600))
        events = Events()
        await p.start(events)
        try:
            started = time.monotonic()
            with pytest.raises(e.PrinterOffline, match="did not finish within 0.8 s"):
                await p.print_receipt(RECEIPT)
            assert time.monotonic() - started < 1.5
            assert events.types() == ["printer.failed"]
        finally:
            await p.stop()


async def test_garbage_on_the_status_line_is_a_typed_error_not_a_crash():
    with PrinterSimulator() as sim:
        t = SerialTransport(sim.port, 9600)
        p = Printer(PrinterConfig(backend="serial", port=sim.port, poll_interval_s=60), transport=t)
        await p.start(Events())
        try:
            sim.inject("offline")  # the simulator answers nothing; a noisy line answers for it
            t.open()
            import os

            os.write(sim._master, b"\xff\xfe\x00")
            health = await p.check()
            assert health.status in (HealthStatus.DEGRADED, HealthStatus.MISSING)
            sim.clear()
            assert (await p.check()).status is HealthStatus.OK
        finally:
            await p.stop()


async def test_a_missing_port_is_missing_with_an_actionable_reason():
    p = Printer(PrinterConfig(backend="serial", port="/dev/ttyNOPRINTER", poll_interval_s=60))
    await p.start(Events())
    try:
        health = await p.check()
        assert health.status is HealthStatus.MISSING and "/dev/ttyNOPRINTER not found" in health.reason
        with pytest.raises(e.PrinterMissing):
            await p.print_receipt(RECEIPT)
    finally:
        await p.stop()


# --- USB: a printer-class device behind the pyusb adapter -------------------------------------------


class _Ep:
    def __init__(self, address: int) -> None:
        self.bEndpointAddress, self.wMaxPacketSize = address, 64


class FakeUsbError(Exception):
    pass


class FakeUsbTimeout(FakeUsbError):
    pass


class UsbPrinter:
    """A USB printer whose bulk OUT feeds the simulator's decoder and whose bulk IN returns its answers."""

    def __init__(self, sim: PrinterSimulator) -> None:
        self.sim, self.replies = sim, bytearray()
        self.detached = False

    def is_kernel_driver_active(self, interface: int) -> bool:
        return True

    def detach_kernel_driver(self, interface: int) -> None:
        self.detached = True

    def set_configuration(self) -> None: ...

    def get_active_configuration(self) -> dict:
        return {(0, 0): [_Ep(0x81), _Ep(0x02)]}

    def write(self, endpoint: int, data: bytes, timeout: int) -> int:
        assert endpoint == 0x02
        self.replies += self.sim.receive(bytes(data))
        return len(data)

    def read(self, endpoint: int, size: int, timeout: int) -> bytes:
        assert endpoint == 0x81
        if not self.replies:
            raise FakeUsbTimeout("timeout")
        out, self.replies = bytes(self.replies[:size]), self.replies[size:]
        return out


async def test_usb_printer_prints_and_reports_no_paper():
    sim = PrinterSimulator()  # not started: the USB fake feeds it directly
    dev = UsbPrinter(sim)
    api = UsbApi(
        find=lambda **ids: dev if ids == {"idVendor": 0x0416, "idProduct": 0x5011} else None,
        claim_interface=lambda d, i: None,
        dispose_resources=lambda d: None,
        errors=(FakeUsbError, FakeUsbTimeout),
    )
    cfg = PrinterConfig(
        backend="usb",
        usb={"vendor_id": 0x0416, "product_id": 0x5011},
        status_timeout_s=0.2,
        poll_interval_s=60,
    )
    p = Printer(cfg, transport=UsbTransport(0x0416, 0x5011, api=api))
    await p.start(Events())
    try:
        await p.print_receipt(RECEIPT)
        assert sim.wait_printed(1) and dev.detached and sim.receipts[-1].qr_data == [URL]
        assert p.inventory()["port"] == "usb:0416:5011"
        sim.inject("no_paper")
        with pytest.raises(e.PaperOut):
            await p.print_receipt(RECEIPT)
        missing = Printer(cfg, transport=UsbTransport(0x0416, 0x9999, api=api))
        await missing.start(Events())
        assert (await missing.check()).status is HealthStatus.MISSING
        await missing.stop()
    finally:
        await p.stop()
        sim.stop()


def test_config_names_the_problem():
    from appliance.config import parse

    with pytest.raises(ConfigError, match="baudrate 1234"):
        parse({"device": {"id": "k"}, "drivers": {"printer": {"baudrate": 1234}}})
    with pytest.raises(ConfigError, match="drivers.printer.usb"):
        parse({"device": {"id": "k"}, "drivers": {"printer": {"backend": "usb"}}})
    with pytest.raises(ConfigError, match="paper_dots"):
        parse({"device": {"id": "k"}, "drivers": {"printer": {"paper_dots": 500}}})


async def test_stop_is_idempotent_and_cleans_the_pty(tmp_path: Path):
    p = Printer(PrinterConfig(backend="sim", poll_interval_s=60))
    await p.start(Events())
    port = p.simulator.port
    await p.stop()
    await p.stop()
    assert not Path(port).exists()
    await asyncio.sleep(0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_the_simulator_takes_any_bytes_and_answers_only_status_bytes(chunks):
    sim = PrinterSimulator()
    try:
        for chunk in chunks:
            for b in sim.receive(b"\x1b@" + chunk + b"\x10\x04\x04"):
                assert b & 0x93 == 0x12  # whatever came before, an answer is a well-formed status byte
        # The print head survives whatever it was given and, once switched off and on (a half-received
        # command declared thousands of bytes), prints a whole receipt.
        sim.power_cycle()
        sim.receive(b"\n\x1b@" + build_receipt(RECEIPT))
        deadline = time.monotonic() + 10
        while not any(r.qr_data[-1:] == [URL] and "申请人：张*" in r.lines for r in sim.receipts):
            assert time.monotonic() < deadline, "the receipt after the garbage never came out"
            time.sleep(0.02)
    finally:
        sim.stop()
