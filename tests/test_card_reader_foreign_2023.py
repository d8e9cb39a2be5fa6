"""The 2023 foreign permanent resident card ('Y') and the 2017 one ('I'), built from the public struct.

Reference: Johann356/readinfo, ``PCSCGetData.h`` (commit b8cea8d7d6af0fbd59315fcf353a1eb6e2616bfa),
structs ``tagIDCardInfor2023`` (``t_idforeigner2023``) and ``tagIDForeigner`` (``t_idforeigner``). Their
members are listed below in the header's order with the header's sizes; the blocks are made by
concatenating them, independently of ``identity.LAYOUTS``, so a wrong offset in the driver shows here.

``tagIDCardInfor2023``: cnName 30, Sex 2, chgNum 4, birthday 16, enName 70 (English name 1-35),
IDSn 36, rfuData1 30 (reserved), startDate 16, endDate 16, enNameEx 22 (English name 36-46), nation 6,
typeFlag 2 ("Y"), assID 6 (link to the earlier 15-character number): 256 bytes.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.card_reader.errors import CardDataError
from drivers.card_reader.identity import CardType, check_digit, parse_identity
from drivers.card_reader.protocol import (
    SamResponse,
    decode_frame,
    encode_card_blocks,
    parse_card_blocks,
    parse_response,
)
from drivers.card_reader.samples import sample

TODAY = dt.date(2026, 11, 21)

# (member, bytes) in the order of the header
T_IDFOREIGNER2023 = (
    ("cnName", 30),
    ("Sex", 2),
    ("chgNum", 4),
    ("birthday", 16),
    ("enName", 70),
    ("IDSn", 36),
    ("rfuData1", 30),
    ("startDate", 16),
    ("endDate", 16),
    ("enNameEx", 22),
    ("nation", 6),
    ("typeFlag", 2),
    ("assID", 6),
)
T_IDFOREIGNER = (
    ("name", 120),
    ("sex", 2),
    ("IDSn", 30),
    ("nation", 6),
    ("cnname", 30),
    ("startDate", 16),
    ("endDate", 16),
    ("birthday", 16),
    ("cardver", 4),
    ("signOrg", 8),
    ("typeFlag", 2),
    ("rfuData2", 6),
)


def struct_block(members: tuple[tuple[str, int], ...], values: dict[str, str]) -> bytes:
    """Concatenate the members as the C struct lays them out: UCS-2 LE, space padded."""
    out = b""
    for name, size in members:
        raw = values.get(name, "").encode("utf-16-le")
        assert len(raw) <= size, name
        out += raw + " ".encode("utf-16-le") * ((size - len(raw)) // 2)
    return out


def number_2023(province: str = "33", nationality: str = "724", birth: str = "19920630", seq: str = "002"):
    first17 = "9" + province + nationality + birth + seq
    return first17 + check_digit(first17)


NAME_EN = "GARCIA LOPEZ, MARIA DE LAS MERCEDES ISABEL"  # 42 characters: longer than enName's 35


def card_2023(**changes: str) -> dict[str, str]:
    values = {
        "cnName": "玛丽亚",
        "Sex": "2",
        "chgNum": "01",
        "birthday": "19920630",
        "enName": NAME_EN[:35],
        "IDSn": number_2023(),
        "rfuData1": "",
        "startDate": "20240105",
        "endDate": "20340105",
        "enNameEx": NAME_EN[35:],
        "nation": "ESP",
        "typeFlag": "Y",
        "assID": "ESP",
    }
    return values | changes


def test_the_public_structs_are_256_bytes():
    assert sum(size for _, size in T_IDFOREIGNER2023) == 256
    assert sum(size for _, size in T_IDFOREIGNER) == 256
    block = struct_block(T_IDFOREIGNER2023, card_2023())
    assert block[248:250] == "Y".encode("utf-16-le")  # typeFlag, where the driver looks for the type


def test_present_a_2023_card_laid_out_by_the_public_struct():
    identity = parse_identity(struct_block(T_IDFOREIGNER2023, card_2023()), today=TODAY)
    assert identity.card_type is CardType.FOREIGN_2023
    assert identity.valid, identity.problems
    # the long English name is whole: characters 1-35 at 52, 36-46 at 220
    assert identity.name_en == NAME_EN
    assert identity.nationality == "ESP"  # from 242-247, not from the English name's tail
    assert identity.previous_number_link == "ESP"
    assert (identity.name, identity.sex, identity.issue_count) == ("玛丽亚", "女", "01")
    assert identity.birth == dt.date(1992, 6, 30)
    assert (identity.valid_from, identity.valid_to) == (dt.date(2024, 1, 5), dt.date(2034, 1, 5))
    assert identity.id_number_masked == "9337**********002" + identity.id_number[-1]
    public = identity.as_public()
    assert public["name_en"] == NAME_EN and public["card_title"] == "外国人永久居留身份证(2023版)"


def test_the_reserved_bytes_158_187_are_not_read_as_a_name():
    identity = parse_identity(
        struct_block(T_IDFOREIGNER2023, card_2023(rfuData1="XXXXXXXXXXXXXXX")), today=TODAY
    )
    assert identity.name_en == NAME_EN and identity.valid


def test_a_space_at_the_35th_character_of_the_english_name_is_kept():
    name = "ABCDEFGHIJKLMNOPQRSTUVWXYZ, ABCDEF GHIJ"  # character 36 follows a space at 35
    assert name[34] == " "
    block = struct_block(T_IDFOREIGNER2023, card_2023(enName=name[:35], enNameEx=name[35:]))
    assert parse_identity(block, today=TODAY).name_en == name


def test_a_short_english_name_leaves_the_continuation_blank():
    block = struct_block(T_IDFOREIGNER2023, card_2023(enName="GARCIA, MARIA", enNameEx=""))
    assert parse_identity(block, today=TODAY).name_en == "GARCIA, MARIA"


def test_the_sample_card_is_byte_for_byte_the_public_struct():
    assert sample("foreigner-2023").text_block() == struct_block(T_IDFOREIGNER2023, card_2023())


def test_the_sample_card_read_reply_over_the_wire():
    # 30 01 reply as a reader sends it: LEN 05 08, text length 01 00, photo length 04 00, text, photo.
    card = sample("foreigner-2023")
    frame = SamResponse(0, 0, 0x90, encode_card_blocks(card.blocks(), with_fingerprint=False)).encode()
    assert frame[5:7] == b"\x05\x08" and frame[10:14] == b"\x01\x00\x04\x00"
    blocks = parse_card_blocks(parse_response(decode_frame(frame)).data, with_fingerprint=False)
    assert parse_identity(blocks.text, today=TODAY).name_en == NAME_EN


# --- the 2023 number --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number, problem",
    [
        (number_2023()[:-1] + ("0" if number_2023()[-1] != "0" else "1"), "check digit"),
        ("8" + number_2023()[1:17], "starts with 9"),
        (number_2023(province="99"), "province code"),
        (number_2023(province="00"), "province code"),
        (number_2023(nationality="000"), "nationality code is not an ISO 3166-1"),
        (number_2023(birth="19920701"), "birth date in the ID number differs"),
        (number_2023()[:-2] + "A" + number_2023()[-1], "17 digits"),
        (number_2023()[:15], "17 digits"),
    ],
)
def test_a_bad_2023_number_is_reported_not_raised(number, problem):
    if problem == "starts with 9":
        number = number + check_digit(number)
    identity = parse_identity(struct_block(T_IDFOREIGNER2023, card_2023(IDSn=number)), today=TODAY)
    assert not identity.valid
    assert any(problem in p for p in identity.problems), identity.problems
    assert all(number[:10] not in p for p in identity.problems)  # problems never quote the number


def test_the_sex_digit_parity_is_not_held_against_a_2023_card():
    # Odd = male is the resident number's rule (GB 11643); no public source confirms it for the 2023
    # card, so a parity that differs must not turn a real card away.
    identity = parse_identity(
        struct_block(T_IDFOREIGNER2023, card_2023(IDSn=number_2023(seq="003"))), today=TODAY
    )
    assert identity.valid, identity.problems


def test_a_numeric_nationality_must_match_the_number():
    ok = parse_identity(struct_block(T_IDFOREIGNER2023, card_2023(nation="724")), today=TODAY)
    assert ok.valid, ok.problems
    bad = parse_identity(struct_block(T_IDFOREIGNER2023, card_2023(nation="250")), today=TODAY)
    assert any("nationality code differs" in p for p in bad.problems)
    junk = parse_identity(struct_block(T_IDFOREIGNER2023, card_2023(nation="E1")), today=TODAY)
    assert any("3-letter or 3-digit" in p for p in junk.problems)


def test_the_issue_count_is_a_number():
    identity = parse_identity(struct_block(T_IDFOREIGNER2023, card_2023(chgNum="X")), today=TODAY)
    assert any("issue count" in p for p in identity.problems)


# --- the 2017 card keeps working ----------------------------------------------------------------------


def test_present_a_2017_card_laid_out_by_the_public_struct():
    values = {
        "name": "SMITH, JOHN",
        "sex": "1",
        "IDSn": "USA330080011501",
        "nation": "USA",
        "cnname": "史密斯",
        "startDate": "20200601",
        "endDate": "20300601",
        "birthday": "19800115",
        "cardver": "20",
        "signOrg": "3300",
        "typeFlag": "I",
    }
    block = struct_block(T_IDFOREIGNER, values)
    identity = parse_identity(block, today=TODAY)
    assert identity.card_type is CardType.FOREIGN_2017 and identity.valid, identity.problems
    assert (identity.name_en, identity.name, identity.nationality) == ("SMITH, JOHN", "史密斯", "USA")
    assert (identity.card_version, identity.authority_code) == ("20", "3300")
    assert identity.birth == dt.date(1980, 1, 15)
    assert sample("foreigner-old").text_block() == block


# --- hostile records in the 2023 layout -----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_2023_records_parse_or_raise_typed(data):
    block = bytearray(struct_block(T_IDFOREIGNER2023, card_2023()))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, 255))
        if i in (248, 249) and data.draw(st.booleans()):
            continue  # mostly keep the marker, so the 2023 parser is what is exercised
        block[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, 255))
        block = block[:cut]  # a truncated record
    try:
        identity = parse_identity(bytes(block), today=TODAY)
    except CardDataError:
        return
    assert identity.valid is (not identity.problems)
    assert isinstance(identity.as_public(), dict)
    if identity.valid:
        # a record that still validates has a well-formed 2023 number
        assert identity.card_type is not CardType.FOREIGN_2023 or identity.id_number.startswith("9")
