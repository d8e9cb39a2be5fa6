"""Switcher protocols without I/O: the byte-capture fixtures, both directions, and fuzzing of every parser.

Each fixture in tests/fixtures/switcher/ is a script of operations with the bytes a host sends and the
bytes the switcher answers. The host side must produce exactly those command bytes and make the stated
sense of the replies; the simulator's device side must answer exactly those reply bytes.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.switcher.ascii_profile import AsciiMatrix, AsciiMatrixDevice, template_regex
from drivers.switcher.config import AsciiProfile, SwitcherConfig
from drivers.switcher.errors import SwitcherError, SwitcherGarbage, SwitcherRejected
from drivers.switcher.extron import ExtronSis, ExtronSisDevice
from drivers.switcher.kramer import KramerP3000, KramerP3000Device
from drivers.switcher.protocol import DeviceInfo, Layer, Matrix, SwitcherProtocol, Tie
from drivers.switcher.transport import LineBuffer

FIXTURES = Path(__file__).parent / "fixtures" / "switcher"


@dataclass
class Step:
    op: str
    expect: str
    sent: bytes
    reply: bytes


def load_capture(path: Path) -> tuple[dict[str, str], list[Step]]:
    header: dict[str, str] = {}
    steps: list[Step] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw or raw.startswith("#"):
            continue
        mark, text = raw[0], raw[2:]
        if mark == "@":
            proto, *pairs = text.split()
            header = {"protocol": proto, **dict(p.split("=") for p in pairs)}
        elif mark == "=":
            op, _, expect = text.partition(" -> ")
            steps.append(Step(op, expect, b"", b""))
        elif mark in "<>":
            data = codecs.escape_decode(text.encode())[0]
            if mark == ">":
                steps[-1].sent += data
            else:
                steps[-1].reply += data
    return header, steps


def host_and_device(header: dict[str, str]) -> tuple[SwitcherProtocol, Matrix, object]:
    matrix = Matrix(int(header["inputs"]), int(header["outputs"]))
    digits = int(header.get("digits", "0")) or None
    if header["protocol"] == "extron":
        return ExtronSis(digits or 2), matrix, ExtronSisDevice(matrix, digits=digits or 2)
    if header["protocol"] == "kramer":
        return KramerP3000(), matrix, KramerP3000Device(matrix)
    return AsciiMatrix(AsciiProfile(), digits or 1), matrix, AsciiMatrixDevice(matrix)


def lines(data: bytes) -> list[bytes]:
    buf = LineBuffer()
    buf.feed(data)
    out = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


CAPTURES = sorted(FIXTURES.glob("*.cap"))


def test_there_is_a_capture_per_protocol():
    protocols = {load_capture(p)[0]["protocol"] for p in CAPTURES}
    assert protocols == {"extron", "kramer", "ascii"}


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_host_sends_the_captured_bytes_and_reads_the_captured_replies(path: Path):
    header, steps = load_capture(path)
    host, _, _ = host_and_device(header)
    for step in steps:
        words = step.op.split()
        replies = lines(step.reply)
        if words[0] == "banner":
            assert all(host.parse_identify(r) is None for r in replies), "a banner is never an answer"
            continue
        if words[0] == "identify":
            assert host.identify_command() == step.sent
            inputs, outputs = map(int, step.expect.split("x"))
            assert [host.parse_identify(r) for r in replies] == [DeviceInfo(inputs=inputs, outputs=outputs)]
            continue
        if words[0] == "route":
            tie = Tie(int(words[1]), int(words[2]), Layer(words[3]))
            assert host.route_command(tie) == step.sent, step.op
            parse = lambda r, tie=tie: host.parse_route_reply(r, tie)  # noqa: E731
        else:
            output, layer = int(words[1]), Layer(words[2])
            assert host.query_command(output, layer) == step.sent, step.op
            parse = lambda r, o=output, la=layer: host.parse_query_reply(r, o, la)  # noqa: E731
        assert len(replies) == 1
        if step.expect == "ok":
            assert parse(replies[0]) is True
        elif re.fullmatch(r"\d+", step.expect) and words[0] == "query":
            assert parse(replies[0]) == int(step.expect)
        else:
            with pytest.raises(SwitcherRejected) as info:
                parse(replies[0])
            assert info.value.device_code == step.expect
            assert step.expect in info.value.message or "error" in info.value.message


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_simulator_answers_the_captured_bytes(path: Path):
    header, steps = load_capture(path)
    _, matrix, device = host_and_device(header)
    for step in steps:
        if step.op == "banner":
            assert device.banner() == step.reply
            continue
        answers = device.feed(step.sent)
        assert b"".join(reply for reply, _ in answers) == step.reply, step.op
        for _, tie in answers:
            if tie is not None:
                matrix.apply(tie)


def test_extron_pads_numbers_to_the_models_width():
    assert ExtronSis(1).route_command(Tie(1, 2)) == b"1*2!"
    assert ExtronSis(2).route_command(Tie(1, 2, Layer.VIDEO)) == b"01*02%"
    assert ExtronSis(3).query_command(12, Layer.AUDIO) == b"012$"


def test_extron_error_codes_have_meanings_and_retry_advice():
    host = ExtronSis()
    with pytest.raises(SwitcherRejected) as busy:
        host.parse_route_reply(b"E22", Tie(1, 2))
    assert busy.value.retryable and "busy" in busy.value.message
    with pytest.raises(SwitcherRejected) as bad_input:
        host.parse_route_reply(b"E01", Tie(1, 2))
    assert bad_input.value.bad_parameter and not bad_input.value.retryable
    assert "input" in bad_input.value.message
    with pytest.raises(SwitcherRejected) as unknown:
        host.parse_route_reply(b"E99", Tie(1, 2))
    assert "not in the SIS error table" in unknown.value.message


def test_front_panel_ties_and_banners_are_skipped_not_taken_for_answers():
    host = ExtronSis()
    tie = Tie(1, 2)
    assert host.parse_route_reply(b"Out03 In05 All", tie) is False  # someone pressed the front panel
    assert host.parse_route_reply(b"(c) Copyright 2024, Extron Electronics, DXP 84 HDMI, V1.05", tie) is False
    assert host.parse_query_reply(b"Out02 In01 All", 2, Layer.VIDEO) is None
    assert host.parse_query_reply(b"In05 All", 2, Layer.VIDEO) is None  # "input 5 to all outputs"
    assert KramerP3000().parse_route_reply(b"~01@VID 3>1", Tie(1, 2, Layer.VIDEO)) is False
    assert KramerP3000().parse_query_reply(b"~01@VID 3>1", 2, Layer.VIDEO) is None


def test_garbage_is_typed_and_says_what_came():
    with pytest.raises(SwitcherGarbage, match="Out02 In01 All"):
        ExtronSis().parse_route_reply(b"hello", Tie(1, 2))
    with pytest.raises(SwitcherGarbage, match="non-ASCII"):
        KramerP3000().parse_route_reply(b"~01@VID \xff", Tie(1, 2))
    with pytest.raises(SwitcherGarbage, match="~NN@"):
        KramerP3000().parse_query_reply(b"VID 1>2", 2, Layer.VIDEO)


def test_extron_password_prompt_is_named():
    with pytest.raises(SwitcherRejected, match="password"):
        ExtronSis().parse_identify(b"Password:")


def test_kramer_without_info_io_is_still_identified():
    assert KramerP3000().parse_identify(b"~01@INFO-IO? ERR 002") == DeviceInfo()


def test_ascii_profile_templates_become_commands_and_device_patterns():
    profile = AsciiProfile(route_video="SW [x] [y]", query_video="GET [y]", suffix="\r\n")
    host = AsciiMatrix(profile, digits=2)
    assert host.route_command(Tie(3, 1, Layer.VIDEO)) == b"SW 03 01\r\n"
    assert host.query_command(4, Layer.VIDEO) == b"GET 04\r\n"
    assert template_regex("[x]V[y].").fullmatch("12V3.")["x"] == "12"


@pytest.mark.parametrize(
    "field,value,problem",
    [
        ("route_video", "V[y].", "[x]"),
        ("query_audio", "Status.", "[y]"),
        ("query_reply", r"^In(\d+)$", "input"),
        ("route_reply", "(unclosed", "regular expression"),
    ],
)
def test_ascii_profile_mistakes_are_named_at_load(field, value, problem):
    with pytest.raises(ValidationError) as info:
        AsciiProfile(**{field: value})
    assert problem in str(info.value) and field in str(info.value)


def test_switcher_config_defaults_ports_per_protocol_and_needs_a_serial_path():
    assert SwitcherConfig(protocol="extron").tcp_port == 23
    assert SwitcherConfig(protocol="kramer").tcp_port == 5000
    assert SwitcherConfig(protocol="kramer", port=5001).tcp_port == 5001
    with pytest.raises(ValidationError, match="serial device path"):
        SwitcherConfig(backend="serial")
    with pytest.raises(ValidationError, match="1-65535"):
        SwitcherConfig(backend="tcp", port="/dev/ttyUSB1")
    with pytest.raises(ValidationError, match="standard rate"):
        SwitcherConfig(backend="serial", port="/dev/ttyUSB1", baudrate=12345)


# --- fuzzing ---------------------------------------------------------------------------------------

HOSTS = [ExtronSis(2), ExtronSis(3), KramerP3000(), AsciiMatrix()]
VALID_REPLIES = [
    b"Out02 In01 All",
    b"01",
    b"V8X4 A8X4",
    b"E13",
    b"~01@VID 1>2 OK",
    b"~01@VID 1>2",
    b"~01@INFO-IO IN 8,OUT 4",
    b"~01@VID ERR 003",
    b"1B2 OK",
    b"Out2 V In1",
    b"Error 02",
]


@st.composite
def mutated_reply(draw):
    base = bytearray(draw(st.sampled_from(VALID_REPLIES)))
    for _ in range(draw(st.integers(0, 4))):
        if not base:
            break
        pos = draw(st.integers(0, len(base) - 1))
        choice = draw(st.integers(0, 2))
        if choice == 0:
            base[pos] = draw(st.integers(0, 255))
        elif choice == 1:
            del base[pos]
        else:
            base[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(base)


REPLY = st.one_of(st.binary(max_size=300), mutated_reply(), st.text(max_size=80).map(lambda s: s.encode()))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    host=st.sampled_from(HOSTS),
    line=REPLY,
    input_=st.integers(0, 999),
    output=st.integers(1, 999),
    layer=st.sampled_from(list(Layer)),
)
def test_every_reply_parser_ends_in_a_value_or_a_typed_error(host, line, input_, output, layer):
    tie = Tie(input_, output, layer)
    plane = layer if layer is not Layer.ALL else Layer.VIDEO
    for parse, ok in (
        (lambda: host.parse_route_reply(line, tie), lambda r: r in (True, False)),
        (
            lambda: host.parse_query_reply(line, output, plane),
            lambda r: r is None or (isinstance(r, int) and r >= 0),
        ),
        (lambda: host.parse_identify(line), lambda r: r is None or isinstance(r, DeviceInfo)),
    ):
        try:
            result = parse()
        except SwitcherError as exc:
            assert exc.message and exc.code.startswith("switcher.")
        else:
            assert ok(result), result


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=400), max_size=12), max_line=st.integers(4, 64))
def test_line_buffer_never_grows_or_leaks_line_ends(chunks, max_line):
    buf = LineBuffer(max_line=max_line, max_lines=8)
    for chunk in chunks:
        buf.feed(chunk)
        assert len(buf._partial) <= max_line
        for _ in range(20):
            try:
                line = buf.next_line()
            except SwitcherGarbage:
                continue
            if line is None:
                break
            assert line and b"\r" not in line and b"\n" not in line and len(line) <= max_line


@settings(max_examples=200, deadline=None)
@given(protocol=st.sampled_from(["extron", "kramer", "ascii"]), data=st.binary(max_size=300))
def test_simulated_devices_answer_any_bytes_with_protocol_lines(protocol, data):
    _, matrix, device = host_and_device({"protocol": protocol, "inputs": "8", "outputs": "4"})
    for reply, tie in device.feed(data):
        assert reply.endswith(b"\r\n") and len(reply) < 100
        if tie is not None:
            assert matrix.has_input(tie.input) and matrix.has_output(tie.output)
