"""Pure H.264/H.265 byte helpers for the live push: make every keyframe joinable on its own.

A receiver that (re)joins a live stream can only start decoding at a keyframe that carries the
parameter sets (SPS/PPS, and VPS for H.265). Encoders opened with a global header (as MP4 recording
wants) put them only in ``extradata``; these helpers put them back in front of keyframes. Only
Annex B packets (start codes, what FFmpeg's encoders and V4L2 M2M produce) are touched.
"""

from __future__ import annotations

from collections.abc import Iterator

_H264_PARAMETER_SETS = {7, 8}  # SPS, PPS
_HEVC_PARAMETER_SETS = {32, 33, 34}  # VPS, SPS, PPS


def codec_family(codec_name: str) -> str | None:
    """ "h264" or "hevc" for the encoder/codec names we can fix up, else None."""
    name = codec_name.lower()
    if "264" in name or name == "h264":
        return "h264"
    if "265" in name or "hevc" in name:
        return "hevc"
    return None


def is_annexb(data: bytes) -> bool:
    return data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01"


def nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B buffer, start codes removed, lazily. Tolerates garbage."""
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        begin = i + 3
        i = data.find(b"\x00\x00\x01", begin)
        unit = data[begin:] if i < 0 else data[begin:i].rstrip(b"\x00")
        if unit:
            yield unit


def nal_type(unit: bytes, family: str) -> int:
    return unit[0] & 0x1F if family == "h264" else (unit[0] >> 1) & 0x3F


def _is_slice(kind: int, family: str) -> bool:
    return 1 <= kind <= 5 if family == "h264" else kind <= 31


def has_parameter_sets(data: bytes, family: str) -> bool:
    """Do parameter sets come before the first slice? Stops at the first slice: O(header), not O(frame)."""
    wanted = _H264_PARAMETER_SETS if family == "h264" else _HEVC_PARAMETER_SETS
    for unit in nal_units(data):
        kind = nal_type(unit, family)
        if kind in wanted:
            return True
        if _is_slice(kind, family):
            return False
    return False


def avcc_to_annexb(extradata: bytes) -> bytes | None:
    """SPS/PPS of an ``avcC`` record as Annex B, or None if the record is malformed."""
    try:
        if len(extradata) < 7 or extradata[0] != 1:
            return None
        out = bytearray()
        pos = 5
        for count_mask in (0x1F, 0xFF):  # SPS count has 3 reserved bits; PPS count is a full byte
            count = extradata[pos] & count_mask
            pos += 1
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                pos += 2
                unit = extradata[pos : pos + size]
                if len(unit) != size or size == 0:
                    return None
                out += b"\x00\x00\x00\x01" + unit
                pos += size
        return bytes(out) or None
    except IndexError:
        return None


def parameter_sets(extradata: bytes | None, family: str | None) -> bytes | None:
    """The stream's parameter sets as Annex B bytes, from Annex B or avcC extradata."""
    if not extradata or family is None:
        return None
    if is_annexb(extradata):
        return extradata if has_parameter_sets(extradata, family) else None
    if family == "h264":
        return avcc_to_annexb(extradata)
    return None  # hvcC: FFmpeg's H.265 encoders give Annex B extradata, so not needed yet


def joinable_keyframe(data: bytes, sets: bytes | None, family: str | None) -> bytes:
    """``data`` with the parameter sets in front, unless it already carries them or is not Annex B."""
    if sets is None or family is None or not is_annexb(data) or has_parameter_sets(data, family):
        return data
    return sets + data
