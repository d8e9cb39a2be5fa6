"""What a card says: the 256-byte text block, laid out per card type, parsed and validated.

The text block is UCS-2 little-endian, space-padded. The UCS-2 character at byte 248 tells the layouts
apart: a space for the resident ID card (居民身份证), ``J`` for the Hong Kong/Macao/Taiwan residence
permit (港澳台居民居住证), ``I`` for the 2017 foreign permanent resident card and ``Y`` for the 2023
one (外国人永久居留身份证). Layouts are tables of ``Field`` so the parser and the simulator's encoder
read the same table.

Validation never raises for bad *contents*: a card whose check digit, dates or codes are wrong is
parsed into an ``Identity`` with ``problems`` filled and ``valid`` False, so the caller can report it as
such and never as a valid identity. Only a block that cannot be laid out at all raises ``CardDataError``.

The ID number is personal data: ``Identity.__repr__`` masks it, ``as_public()`` carries only the masked
form, and ``as_private()`` (for in-process listeners) the full one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from drivers.card_reader.errors import CardDataError
from drivers.card_reader.protocol import TEXT_SIZE

# GB 11643 / ISO 7064 MOD 11-2 and the masked form: one copy, shared with log and event masking
# (check_digit is re-exported for the samples the simulator encodes).
from kiosk_core.logs import check_digit as check_digit
from kiosk_core.logs import has_valid_check_digit, mask_id_number

MARKER_OFFSET = 248
NO_EXPIRY = "长期"


class CardType(StrEnum):
    RESIDENT = "resident"  # 居民身份证, marker ' '
    HMT_PERMIT = "hk_macao_taiwan_permit"  # 港澳台居民居住证, marker 'J'
    FOREIGN_2017 = "foreign_permanent_2017"  # 外国人永久居留身份证 (2017), marker 'I'
    FOREIGN_2023 = "foreign_permanent_2023"  # 外国人永久居留身份证 (2023), marker 'Y'

    @property
    def title(self) -> str:
        return _TITLES[self]


_TITLES = {
    CardType.RESIDENT: "居民身份证",
    CardType.HMT_PERMIT: "港澳台居民居住证",
    CardType.FOREIGN_2017: "外国人永久居留身份证(2017版)",
    CardType.FOREIGN_2023: "外国人永久居留身份证(2023版)",
}

MARKERS: dict[str, CardType] = {
    " ": CardType.RESIDENT,
    "\x00": CardType.RESIDENT,
    "J": CardType.HMT_PERMIT,
    "I": CardType.FOREIGN_2017,
    "Y": CardType.FOREIGN_2023,
}
_MARKER_OF = {
    CardType.RESIDENT: " ",
    CardType.HMT_PERMIT: "J",
    CardType.FOREIGN_2017: "I",
    CardType.FOREIGN_2023: "Y",
}


@dataclass(frozen=True)
class Field:
    """``size`` bytes at ``offset`` of the text block (two bytes per UCS-2 character)."""

    name: str
    offset: int
    size: int


LAYOUTS: dict[CardType, tuple[Field, ...]] = {
    CardType.RESIDENT: (
        Field("name", 0, 30),
        Field("sex", 30, 2),
        Field("nation", 32, 4),
        Field("birth", 36, 16),
        Field("address", 52, 70),
        Field("id_number", 122, 36),
        Field("issuer", 158, 30),
        Field("valid_from", 188, 16),
        Field("valid_to", 204, 16),
    ),
    CardType.HMT_PERMIT: (
        Field("name", 0, 30),
        Field("sex", 30, 2),
        Field("birth", 36, 16),
        Field("address", 52, 70),
        Field("id_number", 122, 36),
        Field("issuer", 158, 30),
        Field("valid_from", 188, 16),
        Field("valid_to", 204, 16),
        Field("pass_number", 220, 18),
        Field("issue_count", 238, 4),
    ),
    CardType.FOREIGN_2017: (
        Field("name_en", 0, 120),
        Field("sex", 120, 2),
        Field("id_number", 122, 30),
        Field("nationality", 152, 6),
        Field("name", 158, 30),
        Field("valid_from", 188, 16),
        Field("valid_to", 204, 16),
        Field("birth", 220, 16),
        Field("card_version", 236, 4),
        Field("authority_code", 240, 8),
    ),
    # tagIDCardInfor2023 (Johann356/readinfo PCSCGetData.h): 158-187 is reserved; the English name's
    # characters 36-46 follow the validity at 220, then the country code, the marker at 248 and the
    # link to the holder's earlier 15-character number.
    CardType.FOREIGN_2023: (
        Field("name", 0, 30),
        Field("sex", 30, 2),
        Field("issue_count", 32, 4),  # 换证次数
        Field("birth", 36, 16),
        Field("name_en", 52, 70),  # characters 1-35
        Field("id_number", 122, 36),
        Field("valid_from", 188, 16),
        Field("valid_to", 204, 16),
        Field("name_en_more", 220, 22),  # characters 36-46
        Field("nationality", 242, 6),
        Field("previous_number_link", 250, 6),
    ),
}
#: bytes of the text block no layout field may use: the card type marker
MARKER_BYTES = range(MARKER_OFFSET, MARKER_OFFSET + 2)

SEXES = {"0": "未知", "1": "男", "2": "女", "9": "未说明"}

#: GB/T 3304-1991 nation codes, names as printed on the card (without 族).
NATIONS: dict[str, str] = {
    "01": "汉",
    "02": "蒙古",
    "03": "回",
    "04": "藏",
    "05": "维吾尔",
    "06": "苗",
    "07": "彝",
    "08": "壮",
    "09": "布依",
    "10": "朝鲜",
    "11": "满",
    "12": "侗",
    "13": "瑶",
    "14": "白",
    "15": "土家",
    "16": "哈尼",
    "17": "哈萨克",
    "18": "傣",
    "19": "黎",
    "20": "傈僳",
    "21": "佤",
    "22": "畲",
    "23": "高山",
    "24": "拉祜",
    "25": "水",
    "26": "东乡",
    "27": "纳西",
    "28": "景颇",
    "29": "柯尔克孜",
    "30": "土",
    "31": "达斡尔",
    "32": "仫佬",
    "33": "羌",
    "34": "布朗",
    "35": "撒拉",
    "36": "毛南",
    "37": "仡佬",
    "38": "锡伯",
    "39": "阿昌",
    "40": "普米",
    "41": "塔吉克",
    "42": "怒",
    "43": "乌孜别克",
    "44": "俄罗斯",
    "45": "鄂温克",
    "46": "德昂",
    "47": "保安",
    "48": "裕固",
    "49": "京",
    "50": "塔塔尔",
    "51": "独龙",
    "52": "鄂伦春",
    "53": "赫哲",
    "54": "门巴",
    "55": "珞巴",
    "56": "基诺",
    "97": "其他",
    "98": "外国血统中国籍人士",
}


def parse_card_date(text: str) -> dt.date | None:
    """``YYYYMMDD`` as on the card, or None when it is not a real date."""
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


# --- the identity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One card's identity as read. ``problems`` is empty exactly when the data passed validation."""

    card_type: CardType
    name: str
    sex: str
    birth: dt.date | None
    id_number: str
    valid_from: dt.date | None
    valid_to: dt.date | None  # None with ``no_expiry`` for "长期"
    no_expiry: bool = False
    nation_code: str = ""
    nation: str = ""
    address: str = ""
    issuer: str = ""
    name_en: str = ""
    nationality: str = ""
    pass_number: str = ""
    issue_count: str = ""
    card_version: str = ""
    authority_code: str = ""
    #: 2023 foreign card: the field that links to the holder's earlier 15-character card number
    previous_number_link: str = ""
    additional_address: str = ""
    problems: tuple[str, ...] = ()
    photo_wlt: bytes = field(default=b"", repr=False)
    photo_image: bytes | None = field(default=None, repr=False)
    photo_status: str = "not decoded"
    fingerprint: bytes = field(default=b"", repr=False)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def id_number_masked(self) -> str:
        return mask_id_number(self.id_number)

    def __repr__(self) -> str:
        # repr() of an identity may end up in a log: only the masked number, no photo.
        return (
            f"Identity({self.card_type.value}, {self.id_number_masked}, valid={self.valid}, "
            f"problems={list(self.problems)})"
        )

    __str__ = __repr__

    def as_public(self) -> dict[str, Any]:
        """Fit for events, logs and the fleet: the number masked, no photo or fingerprint bytes."""
        out: dict[str, Any] = {
            "card_type": self.card_type.value,
            "card_title": self.card_type.title,
            "name": self.name,
            "sex": self.sex,
            "birth": self.birth.isoformat() if self.birth else None,
            "id_number_masked": self.id_number_masked,
            "validity": {
                "from": self.valid_from.isoformat() if self.valid_from else None,
                "to": NO_EXPIRY if self.no_expiry else (self.valid_to.isoformat() if self.valid_to else None),
            },
            "valid": self.valid,
            "problems": list(self.problems),
            "photo": self.photo_status,
        }
        if self.card_type is CardType.RESIDENT:
            out |= {"nation": self.nation, "nation_code": self.nation_code}
        if self.card_type in (CardType.RESIDENT, CardType.HMT_PERMIT):
            out |= {"address": self.address, "issuer": self.issuer}
        if self.card_type is CardType.HMT_PERMIT:
            out |= {"pass_number_masked": mask_id_number(self.pass_number), "issue_count": self.issue_count}
        if self.card_type in (CardType.FOREIGN_2017, CardType.FOREIGN_2023):
            out |= {"name_en": self.name_en, "nationality": self.nationality}
        if self.card_type is CardType.FOREIGN_2017:
            out |= {"card_version": self.card_version, "authority_code": self.authority_code}
        if self.card_type is CardType.FOREIGN_2023:
            out |= {"issue_count": self.issue_count, "previous_number_link": self.previous_number_link}
        if self.additional_address:
            out["additional_address"] = self.additional_address
        return out

    def as_private(self) -> dict[str, Any]:
        """For in-process listeners only (the session): the full numbers and the raw photo."""
        return {
            "id_number": self.id_number,
            "pass_number": self.pass_number,
            "photo_wlt": self.photo_wlt,
            "photo_image": self.photo_image,
            "fingerprint": self.fingerprint,
        }


# --- text block: bytes <-> fields ------------------------------------------------------------------


def card_type_of(block: bytes) -> CardType:
    if len(block) != TEXT_SIZE:
        raise CardDataError(f"the card's text block is {len(block)} bytes, expected {TEXT_SIZE}")
    marker = block[MARKER_OFFSET : MARKER_OFFSET + 2].decode("utf-16-le", errors="replace")
    try:
        return MARKERS[marker]
    except KeyError:
        raise CardDataError(
            f"unknown card layout (type marker U+{ord(marker):04X}): the reader read a card "
            f"this firmware cannot lay out; update the firmware or ask for another "
            f"document"
        ) from None


def decode_fields(block: bytes) -> tuple[CardType, dict[str, str], bool]:
    """(card type, raw field strings stripped of padding, whether every character decoded)."""
    card_type = card_type_of(block)
    values: dict[str, str] = {}
    raw_text: dict[str, str] = {}
    clean = True
    for f in LAYOUTS[card_type]:
        raw = block[f.offset : f.offset + f.size]
        try:
            text = raw.decode("utf-16-le")
        except UnicodeDecodeError:
            text = raw.decode("utf-16-le", errors="replace")
            clean = False
        values[f.name] = text.strip(" \x00")
        raw_text[f.name] = text
    if "name_en_more" in values:
        # One name in two fields: join before stripping, or a space at character 35 is lost.
        values["name_en"] = (raw_text["name_en"] + raw_text.pop("name_en_more")).strip(" \x00")
        del values["name_en_more"]
    return card_type, values, clean


def encode_text_block(card_type: CardType, values: Mapping[str, str]) -> bytes:
    """The 256-byte block a card of this type stores (used by the simulator and the fixtures)."""
    block = bytearray(" ".encode("utf-16-le") * (TEXT_SIZE // 2))
    known = {f.name: f for f in LAYOUTS[card_type]}
    values = dict(values)
    if "name_en_more" in known and "name_en_more" not in values:
        # The 2023 card stores a long English name in two fields (characters 1-35 and 36-46).
        first = known["name_en"].size // 2
        name_en = values.get("name_en", "")
        values["name_en"], values["name_en_more"] = name_en[:first], name_en[first:]
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} are not in the {card_type.value} layout")
    for name, text in values.items():
        f = known[name]
        raw = text.encode("utf-16-le")
        if len(raw) > f.size:
            raise ValueError(f"{name!r} needs {len(raw)} bytes, the layout has {f.size}")
        block[f.offset : f.offset + f.size] = raw + " ".encode("utf-16-le") * ((f.size - len(raw)) // 2)
    block[MARKER_OFFSET : MARKER_OFFSET + 2] = _MARKER_OF[card_type].encode("utf-16-le")
    return bytes(block)


def decode_address(block: bytes) -> str:
    """The additional-address block (``30 03`` reply), UCS-2 LE, padded."""
    return block.decode("utf-16-le", errors="replace").strip(" \x00")


# --- validation ------------------------------------------------------------------------------------

_ID18 = re.compile(r"^[0-9]{17}[0-9X]$")
_ID15_FOREIGN = re.compile(r"^[A-Z]{3}[0-9]{12}$")


def _check_citizen_style_number(
    card_type: CardType, number: str, birth_raw: str, sex: str, problems: list[str], nationality: str = ""
) -> None:
    # Problems never quote the number: they go into public events.
    if not _ID18.match(number):
        problems.append("ID number is not 17 digits plus a check character")
        return
    if not has_valid_check_digit(number):
        problems.append("ID number check digit does not match (GB 11643, ISO 7064 MOD 11-2)")
    if number[6:14] != birth_raw:
        problems.append("birth date in the ID number differs from the card's birth date")
    # Odd = male holds for resident numbers (GB 11643) and the permits built on them; for the 2023
    # foreign card no public source confirms it, and a wrong "invalid" would turn a real card away.
    if (
        sex in ("1", "2")
        and card_type is not CardType.FOREIGN_2023
        and int(number[16]) % 2 != (1 if sex == "1" else 0)
    ):
        problems.append("sex digit of the ID number differs from the card's sex")
    if card_type is CardType.RESIDENT and number[0] not in "12345678":
        problems.append("a resident ID number starts with a province code 1-8")
    if card_type is CardType.HMT_PERMIT and number[:6] not in ("810000", "820000", "830000"):
        problems.append("a Hong Kong/Macao/Taiwan permit number starts with 810000, 820000 or 830000")
    if card_type is CardType.FOREIGN_2023:
        _check_foreign_2023_number(number, nationality, problems)


#: GB/T 2260 province-level codes (the first two digits of a resident number's region code)
PROVINCE_CODES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65".split()
)
_NATIONALITY = re.compile(r"^(?:[A-Z]{3}|[0-9]{3})$")


def _check_foreign_2023_number(number: str, nationality: str, problems: list[str]) -> None:
    """The 2023 card's 18 characters: ``9``, the accepting province (2), the holder's nationality as
    an ISO 3166-1 numeric code (3), the birth date (8), a sequence (3) and the MOD 11-2 check (the
    date and check are tested by the caller, as for a resident number)."""
    if number[0] != "9":
        problems.append("a 2023 foreign permanent resident number starts with 9")
    if number[1:3] not in PROVINCE_CODES:
        problems.append(
            "the 2023 foreign permanent resident number's province code is not a GB/T 2260 province"
        )
    if number[3:6] == "000":
        problems.append(
            "the 2023 foreign permanent resident number's nationality code is not an ISO 3166-1 numeric code"
        )
    if not _NATIONALITY.match(nationality):
        problems.append("nationality is not a 3-letter or 3-digit country code")
    elif nationality.isdigit() and nationality != number[3:6]:
        problems.append("the number's nationality code differs from the card's nationality")


def parse_identity(block: bytes, *, today: dt.date | None = None) -> Identity:
    """Parse and validate a text block. Raises ``CardDataError`` only for an unknown layout."""
    today = today or dt.date.today()
    card_type, v, clean = decode_fields(block)
    problems: list[str] = []
    if not clean:
        problems.append("the text block holds characters that are not valid UCS-2")

    if not v.get("name") and not v.get("name_en"):
        problems.append("name is empty")
    sex_code = v.get("sex", "")
    if sex_code not in SEXES:
        problems.append("sex code is not one of 0, 1, 2, 9 (GB 2261)")

    birth = parse_card_date(v.get("birth", ""))
    if birth is None:
        problems.append("birth date is not a real date (YYYYMMDD)")
    elif birth > today or birth.year < 1890:
        problems.append("birth date is in the future or implausibly old")

    nation_code = v.get("nation", "")
    nation = NATIONS.get(nation_code, "")
    if card_type is CardType.RESIDENT and not nation:
        problems.append("nation code is not in GB 3304")

    number = v.get("id_number", "")
    if card_type is CardType.FOREIGN_2017:
        if not _ID15_FOREIGN.match(number):
            problems.append("2017 foreign permanent resident number is not 3 letters plus 12 digits")
        elif number[:3] != v.get("nationality", ""):
            problems.append("the number's country letters differ from the nationality")
    else:
        _check_citizen_style_number(
            card_type, number, v.get("birth", ""), sex_code, problems, v.get("nationality", "")
        )

    valid_from = parse_card_date(v.get("valid_from", ""))
    if valid_from is None:
        problems.append("'valid from' is not a real date")
    elif valid_from > today:
        problems.append(f"the card is valid only from {valid_from.isoformat()}")
    raw_to = v.get("valid_to", "")
    no_expiry = raw_to == NO_EXPIRY
    valid_to = None if no_expiry else parse_card_date(raw_to)
    if not no_expiry:
        if valid_to is None:
            problems.append("'valid to' is neither a real date nor 长期")
        elif valid_from is not None and valid_to <= valid_from:
            problems.append("'valid to' is not after 'valid from'")
        elif valid_to < today:
            problems.append(f"the card expired on {valid_to.isoformat()}")
    if card_type in (CardType.HMT_PERMIT, CardType.FOREIGN_2023) and not v.get("issue_count", "").isdigit():
        problems.append("issue count is not a number")

    return Identity(
        card_type=card_type,
        name=v.get("name", "") or v.get("name_en", ""),
        sex=SEXES.get(sex_code, "未知"),
        birth=birth,
        id_number=number,
        valid_from=valid_from,
        valid_to=valid_to,
        no_expiry=no_expiry,
        nation_code=nation_code,
        nation=nation,
        address=v.get("address", ""),
        issuer=v.get("issuer", ""),
        name_en=v.get("name_en", ""),
        nationality=v.get("nationality", ""),
        pass_number=v.get("pass_number", ""),
        issue_count=v.get("issue_count", ""),
        card_version=v.get("card_version", ""),
        authority_code=v.get("authority_code", ""),
        previous_number_link=v.get("previous_number_link", ""),
        problems=tuple(problems),
    )
