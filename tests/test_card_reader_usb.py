"""The card reader on USB bulk endpoints: ``UsbTransport`` against a simulated USB device.

No USB gadget is available here, so the device is ``SamUsbDevice``: it has pyusb's ``Device`` interface
(pyusb/pyusb ``usb/core.py``: ``find(idVendor=, idProduct=)``, ``dev.read(endpoint, size, timeout)``,
``dev.write(endpoint, data, timeout)``, ``usb.core.USBError`` / ``USBTimeoutError`` with errno) and
answers the SAM frames with the emulator's code. Only the device is simulated; ``UsbTransport``, the
framing, ``SamLink`` and the driver are the product's.

The frames are the public ones: YinanSoft ``com/YinanSoft/CardReaders/SerialReader.java`` sends find
card as ``AAAAAA96690003200122`` and expects ``AAAAAA9669000800009F0000000097``, select
``AAAAAA96690003200221`` -> ``AAAAAA9669000C00009000000000000000009C``, read ``AAAAAA96690003300132``.
"""

from __future__ import annotations

import sys
import time

import pytest
import usb.core
from hypothesis import HealthCheck, given, settings
from test_card_reader_driver import Events, until
from test_card_reader_fuzz import GOOD_FIND, hostile_replies

from drivers.card_reader.config import CardReaderConfig
from drivers.card_reader.driver import CardReader
from drivers.card_reader.errors import CardReaderError, ReaderMissing, UsbUnavailable
from drivers.card_reader.identity import CardType, parse_identity
from drivers.card_reader.sam import SamLink
from drivers.card_reader.simulator import SamEmulator, SamUsbDevice
from drivers.card_reader.transport import UsbApi, UsbTransport
from kiosk_core.health import HealthStatus

pytestmark = pytest.mark.timeout(60)

VID, PID = 0x0400, 0xC35A
FIND = bytes.fromhex("AAAAAA96690003200122")
FOUND = bytes.fromhex("AAAAAA9669000800009F0000000097")
SELECT = bytes.fromhex("AAAAAA96690003200221")
SELECTED = bytes.fromhex("AAAAAA9669000C00009000000000000000009C")
READ = bytes.fromhex("AAAAAA96690003300132")


@pytest.fixture
def device() -> SamUsbDevice:
    return SamUsbDevice(SamEmulator(pace=False, initial_card="foreigner-2023"))


@pytest.fixture
def transport(device):
    t = UsbTransport(VID, PID, api=device.api())
    t.open()
    yield t
    t.close()


def exchange(transport: UsbTransport, request: bytes, size: int) -> bytes:
    transport.write(request)
    out = b""
    deadline = time.monotonic() + 2
    while len(out) < size and time.monotonic() < deadline:
        out += transport.read_some(0.1)
    return out


def test_the_public_frames_go_over_the_bulk_endpoints(device, transport):
    assert exchange(transport, FIND, len(FOUND)) == FOUND
    assert exchange(transport, SELECT, len(SELECTED)) == SELECTED
    reply = exchange(transport, READ, 1295)
    assert len(reply) == 1295 and reply[5:7] == b"\x05\x08"  # LEN 05 08 as on a serial reader
    # written to the OUT endpoint, read back from the IN endpoint one 64-byte packet at a time
    writes = [t for t in device.transfers if t[0] == "write"]
    reads = [t for t in device.transfers if t[0] == "read"]
    assert {ep for _, ep, _ in writes} == {0x02} and {ep for _, ep, _ in reads} == {0x81}
    assert max(n for _, _, n in reads) == 64


def test_open_detaches_the_kernel_driver_configures_and_claims(device):
    t = UsbTransport(VID, PID, api=device.api())
    t.open()
    assert not device.kernel_driver_active and device.configured and device.claimed == {0}
    t.close()
    t.close()  # idempotent
    assert device.disposed == 1 and not device.claimed


def test_present_the_2023_card_on_a_usb_reader(transport):
    link = SamLink(transport)
    identity = parse_identity(link.read_card().text)
    assert identity.card_type is CardType.FOREIGN_2023 and identity.valid, identity.problems
    assert identity.name_en == "GARCIA LOPEZ, MARIA DE LAS MERCEDES ISABEL"


def test_no_card_and_faults_are_the_same_typed_errors_as_on_serial(device, transport):
    link = SamLink(transport, reply_timeout_s=0.05)
    device.emulator.remove_card()
    assert link.find_card() is False
    device.emulator.present_card("zhang-san")
    for fault in ("bad_checksum", "truncated", "silence"):
        device.emulator.inject(fault)
        with pytest.raises(CardReaderError):
            link.find_card()
        assert link.find_card() is True  # the next exchange is clean


def test_unplugged_mid_session_is_reader_missing_then_replug_reopens(device, transport):
    link = SamLink(transport)
    assert link.find_card()
    device.unplug()
    with pytest.raises(ReaderMissing, match="usb:0400:c35a stopped answering"):
        link.find_card()
    transport.close()
    with pytest.raises(ReaderMissing, match="not found: check that it is plugged in"):
        transport.open()
    device.replug()
    transport.open()
    assert link.find_card()


def test_a_device_that_is_not_there_is_reader_missing_naming_lsusb():
    t = UsbTransport(0x1234, 0x5678, api=SamUsbDevice().api())
    with pytest.raises(ReaderMissing, match="usb:1234:5678 not found.*lsusb"):
        t.open()


def test_no_libusb_is_a_typed_error():
    def find(**_: int) -> None:
        raise usb.core.NoBackendError("No backend available")

    t = UsbTransport(VID, PID, api=UsbApi(find, lambda d, i: None, lambda d: None))
    with pytest.raises(UsbUnavailable, match="libusb-1.0 is not installed"):
        t.open()


def test_no_pyusb_is_a_typed_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "usb", None)
    monkeypatch.setitem(sys.modules, "usb.core", None)
    monkeypatch.setitem(sys.modules, "usb.util", None)
    with pytest.raises(UsbUnavailable, match="need pyusb"):
        UsbTransport(VID, PID).open()


def test_permission_denied_says_how_to_grant_access(device):
    def claim(dev: SamUsbDevice, interface: int) -> None:
        raise usb.core.USBError("Access denied (insufficient permissions)", -3, 13)

    api = device.api()
    t = UsbTransport(VID, PID, api=UsbApi(api.find, claim, api.dispose_resources))
    with pytest.raises(ReaderMissing, match='udev rule.*ATTR{idVendor}=="0400"'):
        t.open()
    assert device.disposed == 1


@pytest.mark.parametrize(
    "endpoints, kwargs, missing",
    [
        ([(0x81, 0x01)], {}, "IN"),  # isochronous only
        ([(0x81, 0x02)], {}, "OUT"),
        ([(0x81, 0x02), (0x02, 0x02)], {"endpoint_in": 0x83}, "IN"),
    ],
)
def test_an_interface_without_usable_endpoints_is_a_typed_error(endpoints, kwargs, missing):
    device = SamUsbDevice(endpoints=endpoints)
    t = UsbTransport(VID, PID, api=device.api(), **kwargs)
    with pytest.raises(UsbUnavailable, match=f"no usable bulk/interrupt {missing} endpoint"):
        t.open()


def test_configured_endpoints_are_used(device):
    device2 = SamUsbDevice(endpoints=[(0x81, 0x02), (0x83, 0x03), (0x02, 0x02), (0x04, 0x03)])
    t = UsbTransport(VID, PID, endpoint_in=0x83, endpoint_out=0x04, api=device2.api())
    t.open()
    t.write(FIND)
    assert device2.transfers[-1] == ("write", 0x04, len(FIND))


# --- config -----------------------------------------------------------------------------------------


def test_usb_config_from_toml():
    import tomllib

    from pydantic import ValidationError

    cfg = CardReaderConfig.model_validate(
        tomllib.loads('backend = "usb"\n[usb]\nvendor_id = 0x0400\nproduct_id = 0xc35a\nendpoint_in = 0x81\n')
    )
    assert cfg.usb is not None and (cfg.usb.vendor_id, cfg.usb.product_id, cfg.usb.interface) == (VID, PID, 0)
    for bad in (
        {"backend": "usb"},
        {"backend": "usb", "usb": {"vendor_id": 0x10000, "product_id": 1}},
        {"backend": "usb", "usb": {"vendor_id": 1, "product_id": 1, "endpoint_in": 0x02}},
        {"backend": "usb", "usb": {"vendor_id": 1, "product_id": 1, "endpoint_out": 0x81}},
        {"backend": "usb", "usb": {"vendor_id": 1}},
    ):
        with pytest.raises(ValidationError):
            CardReaderConfig.model_validate(bad)


# --- the driver on a USB reader -----------------------------------------------------------------------

USB_FAST = CardReaderConfig.model_validate(
    {
        "backend": "usb",
        "usb": {"vendor_id": VID, "product_id": PID},
        "poll_interval_s": 0.03,
        "reply_timeout_s": 0.2,
        "read_timeout_s": 0.2,
        "reconnect_base_s": 0.05,
        "reconnect_cap_s": 0.2,
    }
)


async def test_the_driver_reads_a_card_on_a_usb_reader_and_survives_an_unplug():
    device = SamUsbDevice(SamEmulator(pace=False))
    events = Events()
    reader = CardReader(USB_FAST, transport=UsbTransport(VID, PID, api=device.api()))
    await reader.start(events.emit)
    try:
        await until(lambda: reader.health().status is HealthStatus.OK, what="usb reader ok")
        assert reader.port == "usb:0400:c35a" and reader.sam_id
        device.emulator.present_card("foreigner-2023")
        read = await events.next("card.read")
        assert read["card_type"] == "foreign_permanent_2023" and read["valid"]
        assert read["id_number_masked"].startswith("9337**********")
        assert "name_en" not in read and read["_private"]["name_en"].startswith("GARCIA LOPEZ")
        device.unplug()
        await until(lambda: reader.health().status is HealthStatus.MISSING, what="missing")
        assert "usb:0400:c35a" in reader.health().reason
        device.replug()
        await until(lambda: reader.health().status is HealthStatus.OK, what="ok after replug")
        read = await events.next("card.read")  # announced again after the reconnect
        assert read["valid"] and reader.stats["internal_error"] == 0
    finally:
        await reader.stop()


async def test_a_usb_reader_that_is_not_plugged_in_is_missing_not_a_crash():
    # Real pyusb on libusb: there is no such device on this machine.
    events = Events()
    cfg = USB_FAST.model_copy(update={"usb": USB_FAST.usb.model_copy(update={"vendor_id": 0x1D6B + 1})})
    reader = CardReader(cfg)
    await reader.start(events.emit)
    try:
        await until(lambda: reader.health().status is not HealthStatus.OK and reader.health().reason != "", 5)
        await until(lambda: "not found" in reader.health().reason or "libusb" in reader.health().reason, 5)
        assert reader.health().status in (HealthStatus.MISSING, HealthStatus.DEGRADED)
        assert reader.stats["internal_error"] == 0 and not reader._task.done()
    finally:
        await reader.stop()


async def test_no_libusb_leaves_the_driver_degraded_with_the_reason():
    def find(**_: int) -> None:
        raise usb.core.NoBackendError("No backend available")

    reader = CardReader(
        USB_FAST, transport=UsbTransport(VID, PID, api=UsbApi(find, lambda d, i: None, lambda d: None))
    )
    await reader.start(Events().emit)
    try:
        await until(lambda: reader.health().status is HealthStatus.DEGRADED, what="degraded")
        assert "libusb-1.0 is not installed" in reader.health().reason
        assert reader.stats["internal_error"] == 0
    finally:
        await reader.stop()


# --- hostile bytes over the USB framing -------------------------------------------------------------------


@pytest.fixture(scope="module")
def usb_link():
    device = SamUsbDevice(SamEmulator(pace=False, initial_card="zhang-san"))
    t = UsbTransport(VID, PID, api=device.api())
    t.open()
    yield device, SamLink(t, reply_timeout_s=0.05)
    t.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=hostile_replies(GOOD_FIND))
def test_hostile_bytes_over_usb_end_typed_and_the_link_recovers(usb_link, raw):
    device, link = usb_link
    device.emulator.reply_with(raw)
    try:
        link.find_card()
    except CardReaderError:
        pass
    assert link.find_card() is True
