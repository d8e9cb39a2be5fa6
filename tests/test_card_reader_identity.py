"""Card contents: the check digit, masking, the four layouts, validation, samples and config."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.card_reader.config import CardReaderConfig
from drivers.card_reader.errors import CardDataError
from drivers.card_reader.identity import (
    LAYOUTS,
    NATIONS,
    CardType,
    check_digit,
    encode_text_block,
    has_valid_check_digit,
    mask_id_number,
    parse_identity,
)
from drivers.card_reader.photo import DECODE_FAILED, DECODED, NOT_DECODED, decode_photo, load_decoder
from drivers.card_reader.samples import SAMPLES, sample

TODAY = dt.date(2026, 11, 21)

# --- GB 11643 check digit -----------------------------------------------------------------------


@pytest.mark.parametrize("number", ["11010519491231002X", "440524188001010014", "110101199003074477"])
def test_published_numbers_have_valid_check_digits(number):
    # 11010519491231002X is the worked example of GB 11643-1999 itself.
    assert check_digit(number[:17]) == number[17]
    assert has_valid_check_digit(number)


def test_every_single_digit_change_is_caught():
    number = "11010519491231002X"
    for i in range(17):
        for d in "0123456789":
            if d != number[i]:
                assert not has_valid_check_digit(number[:i] + d + number[i + 1 :])


def test_check_digit_x_means_ten():
    assert check_digit("11010519491231002") == "X"


@pytest.mark.parametrize(
    "bad", ["1101051949123100", "1101051949123100A", "１１０１０５１９４９１２３１００２"]
)
def test_check_digit_needs_17_ascii_digits(bad):
    with pytest.raises(ValueError):
        check_digit(bad)


def test_mask_keeps_four_and_four():
    assert mask_id_number("330803199003071235") == "3308**********1235"
    assert mask_id_number("USA330080011501") == "USA3*******1501"
    assert mask_id_number("12345678") == "********"
    assert mask_id_number("") == ""


# --- the sample cards ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_samples_parse_back_to_their_fields(key):
    card = sample(key)
    identity = parse_identity(card.text_block(), today=TODAY)
    assert identity.card_type is card.card_type
    assert identity.id_number == card.fields["id_number"]
    if key == "bad-checksum":
        assert not identity.valid
        assert identity.problems == ("ID number check digit does not match (GB 11643, ISO 7064 MOD 11-2)",)
    else:
        assert identity.valid, identity.problems


def test_samples_cover_every_card_type():
    assert {s.card_type for s in SAMPLES.values()} == set(CardType)


def test_unknown_sample_names_the_samples():
    with pytest.raises(KeyError, match="zhang-san"):
        sample("nobody")


def test_resident_card_public_view_masks_the_number():
    identity = parse_identity(sample("zhang-san").text_block(), today=TODAY)
    public = identity.as_public()
    assert public["nation"] == "汉" and public["sex"] == "男" and public["birth"] == "1990-03-07"
    assert public["id_number_masked"] == "3308**********1235"
    assert public["validity"] == {"from": "2020-03-15", "to": "2040-03-15"}
    assert "330803199003071235" not in repr(public) and "330803199003071235" not in repr(identity)
    assert identity.as_private()["id_number"] == "330803199003071235"


def test_long_term_validity():
    identity = parse_identity(sample("wang-fang").text_block(), today=TODAY)
    assert identity.no_expiry and identity.valid_to is None
    assert identity.as_public()["validity"]["to"] == "长期"
    assert identity.nation == "苗" and identity.sex == "女"


def test_hk_macao_taiwan_permit_fields():
    identity = parse_identity(sample("hk-permit").text_block(), today=TODAY)
    public = identity.as_public()
    assert public["card_type"] == "hk_macao_taiwan_permit"
    assert public["pass_number_masked"] == "H123*5678" and public["issue_count"] == "01"
    assert "nation" not in public


def test_foreign_cards_fields():
    old = parse_identity(sample("foreigner-old").text_block(), today=TODAY).as_public()
    assert (old["name_en"], old["nationality"], old["name"]) == ("SMITH, JOHN", "USA", "史密斯")
    new = parse_identity(sample("foreigner-2023").text_block(), today=TODAY).as_public()
    assert (new["name_en"], new["nationality"], new["birth"]) == (
        "GARCIA LOPEZ, MARIA DE LAS MERCEDES ISABEL",
        "ESP",
        "1992-06-30",
    )


def test_nation_table_is_gb3304():
    assert len([c for c in NATIONS if int(c) <= 56]) == 56
    assert NATIONS["01"] == "汉" and NATIONS["56"] == "基诺"


# --- validation of bad contents ------------------------------------------------------------------------


def _resident(**changes: str) -> bytes:
    fields = dict(sample("zhang-san").fields) | changes
    return encode_text_block(CardType.RESIDENT, fields)


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"birth": "19900230"}, "birth date is not a real date"),
        ({"birth": "20991231", "id_number": "330803209912311230"}, "future"),
        ({"nation": "77"}, "nation code"),
        ({"sex": "5"}, "sex code"),
        ({"valid_to": "20250101"}, "expired on 2025-01-01"),
        ({"valid_to": "20200101"}, "'valid to' is not after"),
        ({"valid_to": "永久"}, "neither a real date nor 长期"),
        ({"id_number": "3308031990030712"}, "17 digits"),
        ({"birth": "19900308"}, "birth date in the ID number differs"),
        ({"sex": "2"}, "sex digit"),
        ({"name": ""}, "name is empty"),
    ],
)
def test_bad_contents_are_reported_not_raised(changes, problem):
    identity = parse_identity(_resident(**changes), today=TODAY)
    assert not identity.valid
    assert any(problem in p for p in identity.problems), identity.problems
    assert not identity.as_public()["valid"]
    # problems go into public events: they must never quote the number
    assert all(identity.id_number[:10] not in p for p in identity.problems)


def test_undecodable_ucs2_is_a_problem():
    block = bytearray(_resident())
    block[0:2] = b"\x00\xd8"  # a lone surrogate
    identity = parse_identity(bytes(block), today=TODAY)
    assert any("not valid UCS-2" in p for p in identity.problems)


def test_unknown_layout_marker_raises_typed_error():
    block = bytearray(_resident())
    block[248:250] = "Z".encode("utf-16-le")
    with pytest.raises(CardDataError, match="unknown card layout"):
        parse_identity(bytes(block))


def test_wrong_block_size_raises_typed_error():
    with pytest.raises(CardDataError):
        parse_identity(b"\x20\x00" * 100)


def test_layouts_do_not_overlap_and_fit():
    for card_type, fields in LAYOUTS.items():
        used: set[int] = set(range(248, 250))  # the card type marker
        for f in fields:
            span = set(range(f.offset, f.offset + f.size))
            assert not used & span, (card_type, f.name)
            assert f.offset % 2 == 0 and f.size % 2 == 0 and f.offset + f.size <= 256
            used |= span


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=256, max_size=256), st.sampled_from(["  ", "J\x00", "I\x00", "Y\x00", "\x00\x00"]))
def test_random_blocks_parse_or_raise_typed(block, marker):
    block = block[:248] + marker.encode("latin-1") + block[250:]
    try:
        identity = parse_identity(block, today=TODAY)
    except CardDataError:
        return
    # random bytes are (overwhelmingly) not a valid card, and never crash the parser
    assert identity.valid is (not identity.problems)
    assert isinstance(identity.as_public(), dict)


# --- photo hook ---------------------------------------------------------------------------------------


def test_photo_without_decoder_is_reported_not_decoded():
    assert load_decoder(None) is None  # nothing installed here
    assert decode_photo(b"WLT...", None) == (NOT_DECODED, None)


def test_photo_decoder_hook():
    assert decode_photo(b"WLT", lambda wlt: b"BM" + wlt) == (DECODED, b"BMWLT")

    def broken(wlt: bytes) -> bytes:
        raise RuntimeError("vendor library crashed")

    assert decode_photo(b"WLT", broken) == (DECODE_FAILED, None)


def test_photo_decoder_from_config_must_load():
    from kiosk_core.errors import ConfigError

    assert load_decoder("base64:b64encode")(b"x") == b"eA=="
    with pytest.raises(ConfigError, match="photo_decoder"):
        load_decoder("no_such_vendor_module:decode")


# --- config -----------------------------------------------------------------------------------------


def test_config_defaults_match_the_issue():
    cfg = CardReaderConfig()
    assert (cfg.backend, cfg.port, cfg.baudrate, cfg.poll_interval_s) == (
        "serial",
        "/dev/ttyUSB0",
        115200,
        0.3,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"backend": "usb"},
        {"baudrate": 12345},
        {"colour": "red"},
        {"sim": {"initial_card": "nobody"}},
        {"poll_interval_s": 0},
        {"reconnect_base_s": 5, "reconnect_cap_s": 1},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        CardReaderConfig.model_validate(bad)


def test_config_from_toml_section():
    import tomllib

    section = tomllib.loads(
        'backend = "sim"\nport = "/dev/ttyUSB0"\nbaudrate = 115200\n[sim]\ninitial_card = "hk-permit"\n'
    )
    cfg = CardReaderConfig.model_validate(section)
    assert cfg.backend == "sim" and cfg.sim.initial_card == "hk-permit"
