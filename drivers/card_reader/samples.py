"""Made-up sample cards for the simulator, the tests, the bench and demos. Every person here is invented.

Every sample of a valid card has a correct check digit (computed, not typed in) and dates valid until
at least 2040; ``bad-checksum`` is a resident card whose check digit is deliberately wrong, so it must be
reported as invalid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from drivers.card_reader.identity import CardType, check_digit, encode_text_block
from drivers.card_reader.protocol import ADDRESS_SIZE, PHOTO_SIZE, CardBlocks


def _with_check(first17: str) -> str:
    return first17 + check_digit(first17)


def _with_wrong_check(first17: str) -> str:
    right = check_digit(first17)
    return first17 + ("0" if right != "0" else "1")


def _opaque(seed: str, size: int, header: bytes = b"") -> bytes:
    """Deterministic filler standing in for a WLT photo or fingerprint template."""
    out = bytearray(header)
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass(frozen=True, repr=False)
class SampleCard:
    key: str
    description: str
    card_type: CardType
    fields: dict[str, str]
    with_fingerprint: bool = False
    additional_address: str = ""
    photo: bytes = field(default=b"")

    def text_block(self) -> bytes:
        return encode_text_block(self.card_type, self.fields)

    def blocks(self) -> CardBlocks:
        photo = self.photo or _opaque(f"photo/{self.key}", PHOTO_SIZE, b"WLT\x00")
        fingerprint = _opaque(f"fp/{self.key}", 1024, b"C\x01") if self.with_fingerprint else b""
        return CardBlocks(self.text_block(), photo, fingerprint)

    def address_block(self) -> bytes:
        """``30 03`` reply data (empty when the card holds no additional address)."""
        if not self.additional_address:
            return b""
        raw = self.additional_address.encode("utf-16-le")
        return raw + " ".encode("utf-16-le") * ((ADDRESS_SIZE - len(raw)) // 2)

    def __repr__(self) -> str:
        return f"SampleCard({self.key!r}, {self.card_type.value})"


SAMPLES: dict[str, SampleCard] = {
    s.key: s
    for s in (
        SampleCard(
            "zhang-san",
            "resident ID card, male, 汉, with fingerprints",
            CardType.RESIDENT,
            {
                "name": "张三",
                "sex": "1",
                "nation": "01",
                "birth": "19900307",
                "address": "浙江省衢州市衢江区赤柯山村88号",
                "id_number": _with_check("33080319900307123"),
                "issuer": "衢州市公安局衢江分局",
                "valid_from": "20200315",
                "valid_to": "20400315",
            },
            with_fingerprint=True,
        ),
        SampleCard(
            "wang-fang",
            "resident ID card, female, 苗, valid 长期, with an additional address",
            CardType.RESIDENT,
            {
                "name": "王芳",
                "sex": "2",
                "nation": "06",
                "birth": "19560812",
                "address": "浙江省衢州市衢江区赤柯山村12号",
                "id_number": _with_check("33080319560812004"),
                "issuer": "衢州市公安局衢江分局",
                "valid_from": "20160520",
                "valid_to": "长期",
            },
            additional_address="浙江省衢州市衢江区新村5号",
        ),
        SampleCard(
            "hk-permit",
            "Hong Kong/Macao/Taiwan residence permit ('J')",
            CardType.HMT_PERMIT,
            {
                "name": "陈大文",
                "sex": "1",
                "birth": "19851120",
                "address": "浙江省衢州市柯城区府山街道1号",
                "id_number": _with_check("81000019851120123"),
                "issuer": "衢州市公安局",
                "valid_from": "20230110",
                "valid_to": "20280110",
                "pass_number": "H12345678",
                "issue_count": "01",
            },
        ),
        SampleCard(
            "foreigner-old",
            "foreign permanent resident card, 2017 layout ('I')",
            CardType.FOREIGN_2017,
            {
                "name_en": "SMITH, JOHN",
                "sex": "1",
                "id_number": "USA330080011501",
                "nationality": "USA",
                "name": "史密斯",
                "valid_from": "20200601",
                "valid_to": "20300601",
                "birth": "19800115",
                "card_version": "20",
                "authority_code": "3300",
            },
        ),
        SampleCard(
            "foreigner-2023",
            "foreign permanent resident card, 2023 layout ('Y'), English name longer than 35 characters",
            CardType.FOREIGN_2023,
            {
                "name": "玛丽亚",
                "sex": "2",
                "issue_count": "01",
                "birth": "19920630",
                # 42 characters: the card keeps 1-35 at bytes 52-121 and 36-46 at 220-241
                "name_en": "GARCIA LOPEZ, MARIA DE LAS MERCEDES ISABEL",
                # 9, Zhejiang (33), Spain (ISO 3166-1 numeric 724), birth date, sequence 002 (even: female)
                "id_number": _with_check("93372419920630002"),
                "valid_from": "20240105",
                "valid_to": "20340105",
                "nationality": "ESP",
                "previous_number_link": "ESP",
            },
        ),
        SampleCard(
            "bad-checksum",
            "resident ID card whose check digit is wrong (must be reported invalid)",
            CardType.RESIDENT,
            {
                "name": "李四",
                "sex": "1",
                "nation": "03",
                "birth": "19780521",
                "address": "浙江省衢州市龙游县东华街道7号",
                "id_number": _with_wrong_check("33080219780521335"),
                "issuer": "龙游县公安局",
                "valid_from": "20180601",
                "valid_to": "20380601",
            },
        ),
    )
}


def sample(key: str) -> SampleCard:
    try:
        return SAMPLES[key]
    except KeyError:
        raise KeyError(f"no sample card {key!r}; the samples are: {', '.join(SAMPLES)}") from None
