"""ESC/POS both ways: the receipt the kiosk builds, the status bytes it reads, the decoder the
simulator runs; and hostile bytes (truncated, garbage, oversized) thrown at the parsers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.printer.errors import PrinterError, ReceiptError, StatusError
from drivers.printer.protocol import (
    MAX_PENDING,
    EscPosDecoder,
    PrinterStatus,
    Receipt,
    build_receipt,
    qr_code,
    status_request,
)

URL = "https://zwfw.example.gov.cn/progress?no=SQ330803-20261121-0007"
RECEIPT = Receipt(
    title="办事回执",
    site="赤柯山村便民服务站",
    item="最低生活保障申请",
    number_label="申请编号",
    number="SQ330803-20261121-0007",
    date="2026-11-21",
    department="县民政局",
    name_masked="张*",
    qr_url=URL,
)


def decoded(data: bytes) -> list:
    return EscPosDecoder().feed(data)


def test_the_receipt_is_chinese_text_a_qr_code_and_a_cut():
    data = build_receipt(RECEIPT)
    assert data.startswith(b"\x1b@\x1c&")  # initialise, then Chinese mode: GB18030 text follows
    assert "申请编号：SQ330803-20261121-0007".encode("gb18030") in data
    assert data.endswith(b"\x1dVB\x00")  # feed and cut
    cmds = decoded(data)
    names = [c.name for c in cmds]
    assert names[:2] == ["init", "chinese"] and names[-1] == "cut"
    texts = [c.value for c in cmds if c.name == "text"]
    assert "办事回执" in texts and "申请人：张*" in texts and "部门：县民政局" in texts
    assert [c.value for c in cmds if c.name == "qr_store"] == [URL.encode()]
    assert ("size", (2, 2)) in [(c.name, c.value) for c in cmds]
    assert [c.name for c in cmds].index("qr_store") < [c.name for c in cmds].index("qr_print")
    assert all(c.name != "unknown" for c in cmds)


def test_a_field_cannot_smuggle_printer_commands_or_overflow():
    # An ESC @ / GS V inside a department name would reset or cut the paper: control characters become spaces.
    hostile = Receipt(**{**RECEIPT.__dict__, "department": "民政\x1b@\x1dV\x00局"})
    cmds = decoded(build_receipt(hostile))
    assert [c.name for c in cmds].count("init") == 1 and [c.name for c in cmds].count("cut") == 1
    with pytest.raises(ReceiptError, match="item"):
        build_receipt(Receipt(**{**RECEIPT.__dict__, "item": "长" * 65}))
    with pytest.raises(ReceiptError, match="number"):
        build_receipt(Receipt(**{**RECEIPT.__dict__, "number": 7}))  # type: ignore[arg-type]
    # A lone surrogate (no character at all) is blanked like a control character, not sent half-encoded.
    assert "站\n".encode("gb18030") in build_receipt(Receipt(**{**RECEIPT.__dict__, "site": "站\ud800"}))
    with pytest.raises(ReceiptError, match="QR"):
        qr_code("x" * 600)
    assert isinstance(ReceiptError("x"), PrinterError) and isinstance(ReceiptError("x"), ValueError)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({1: 0x12, 2: 0x12, 4: 0x12}, PrinterStatus()),
        ({1: 0x1A, 2: 0x32, 4: 0x72}, PrinterStatus(offline=True, paper_end=True, paper_near_end=False)),
        ({1: 0x1A, 2: 0x16, 4: 0x12}, PrinterStatus(offline=True, cover_open=True)),
        ({1: 0x12, 2: 0x12, 4: 0x1E}, PrinterStatus(paper_near_end=True)),
        ({1: 0x1A, 2: 0x52, 3: 0x32}, PrinterStatus(offline=True, error=True)),
    ],
)
def test_status_bytes_as_the_manuals_give_them(answers, expected):
    got = PrinterStatus.from_answers(answers)
    assert (got.offline, got.cover_open, got.paper_end, got.error) == (
        expected.offline,
        expected.cover_open,
        expected.paper_end,
        expected.error,
    )
    assert got.ready is expected.ready


def test_status_requests_and_a_byte_that_is_not_a_status():
    assert [status_request(n) for n in (1, 2, 3, 4)] == [b"\x10\x04" + bytes((n,)) for n in (1, 2, 3, 4)]
    with pytest.raises(ValueError):
        status_request(5)
    with pytest.raises(StatusError, match="DLE EOT 4.*baud rate"):
        PrinterStatus.from_answers({1: 0x12, 4: 0xFF})


@given(st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_every_printer_state_survives_its_own_answers(offline, cover, paper, near, error):
    state = PrinterStatus(
        offline=offline, cover_open=cover, paper_end=paper, paper_near_end=near, error=error
    )
    back = PrinterStatus.from_answers(state.answers())
    assert (back.cover_open, back.paper_end, back.paper_near_end, back.error) == (cover, paper, near, error)
    assert back.ready is state.ready


@given(st.dictionaries(st.sampled_from([1, 2, 3, 4]), st.integers(-5, 300)))
def test_any_status_answer_parses_or_is_a_status_error(answers):
    try:
        PrinterStatus.from_answers(answers)
    except StatusError:
        assert any(not 0 <= b <= 255 or b & 0x93 != 0x12 for b in answers.values())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 400), max_size=30))
def test_garbage_in_any_chunks_never_raises_and_stays_bounded(data, cuts):
    dec = EscPosDecoder()
    pos = 0
    for n in [*cuts, len(data)]:
        dec.feed(data[pos : pos + n])
        pos += n
        assert dec.pending <= MAX_PENDING
    dec.feed(data[pos:])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 373), max_size=12), st.binary(max_size=40))
def test_a_receipt_cut_anywhere_decodes_the_same(cuts, noise):
    data = build_receipt(RECEIPT)
    whole = EscPosDecoder().feed(data)
    dec = EscPosDecoder()
    parts, pos = [], 0
    for n in sorted(cuts):
        parts += dec.feed(data[pos:n])
        pos = max(pos, n)
    parts += dec.feed(data[pos:])
    assert [(c.name, c.value) for c in parts] == [(c.name, c.value) for c in whole]
    # Garbage ahead of the receipt (line noise at power-on) costs no QR code once the printer re-inits.
    dec = EscPosDecoder()
    got = dec.feed(noise + b"\n" + data)
    assert URL.encode() in [c.value for c in got if c.name == "qr_store"]


def test_oversized_and_truncated_commands():
    dec = EscPosDecoder()
    # A raster image declaring 72 x 65535 bytes is refused at its header, not waited for.
    got = dec.feed(b"\x1dv0\x00\x48\x00\xff\xff" + b"\x00" * 10)
    assert got[0].name == "unknown" and dec.pending < 16
    # A QR store declaring 60000 bytes is refused too.
    got = EscPosDecoder().feed(b"\x1d(k\x60\xea\x31\x50\x30abc")
    assert got[0].name == "unknown"
    # A command cut short waits for its end.
    dec = EscPosDecoder()
    assert dec.feed(b"\x1d(k\x05\x00\x31\x50") == [] and dec.pending == 7
    assert [c.name for c in dec.feed(b"\x30ab")] == ["qr_store"]
    assert [c.name for c in EscPosDecoder().feed(b"\x10\x04\x07\x10\x04\x04")] == ["unknown", "status"]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["title", "site", "item", "number", "department", "qr_url"]), st.text(max_size=80)
    )
)
def test_hostile_field_text_never_becomes_a_printer_command(fields):
    receipt = Receipt(**{**RECEIPT.__dict__, **fields})
    try:
        data = build_receipt(receipt)
    except ReceiptError:
        return  # too long, or nothing to put in the QR code: refused, named
    names = [c.name for c in EscPosDecoder().feed(data)]
    assert names.count("init") == 1 and names.count("cut") == 1 and names.count("qr_store") == 1
    assert "unknown" not in names
