"""The card photo: a 1024-byte WLT blob that only a vendor library can turn into an image.

The firmware keeps the WLT bytes opaque. A decoder is a callable ``(wlt: bytes) -> bytes`` returning an
image (BMP/PNG/JPEG bytes), found either from the config (``photo_decoder = "module:function"``) or from
the ``village_kiosk.wlt_decoder`` entry point a vendor package installs. Without one, the photo is
reported as ``"not decoded"``; a decoder that fails yields ``"decode failed"`` and never breaks a read.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from kiosk_core.errors import ConfigError

log = logging.getLogger(__name__)

PhotoDecoder = Callable[[bytes], bytes]
ENTRY_POINT_GROUP = "village_kiosk.wlt_decoder"

NOT_DECODED = "not decoded"
DECODED = "decoded"
DECODE_FAILED = "decode failed"
NO_PHOTO = "no photo"


def load_decoder(spec: str | None) -> PhotoDecoder | None:
    """The decoder named by ``spec`` (``module:function``), else the first installed entry point, else None."""
    if spec:
        module_name, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                "[drivers.card_reader] photo_decoder",
                [
                    f"cannot load {spec!r} ({exc}); install the vendor's WLT decoder package or "
                    f"remove photo_decoder"
                ],
            ) from None
        if not callable(fn):
            raise ConfigError("[drivers.card_reader] photo_decoder", [f"{spec!r} is not callable"])
        return fn
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            return ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken vendor plug-in must not stop the reader
            log.warning(
                "WLT decoder plug-in %s failed to load (%s): photos will not be decoded", ep.name, exc
            )
    return None


def decode_photo(wlt: bytes, decoder: PhotoDecoder | None) -> tuple[str, bytes | None]:
    """(status, image bytes or None). Never raises."""
    if not wlt:
        return NO_PHOTO, None
    if decoder is None:
        return NOT_DECODED, None
    try:
        image = decoder(wlt)
    except Exception as exc:  # noqa: BLE001 - vendor code: any failure is just an undecoded photo
        log.warning(
            "the WLT photo decoder failed (%s: %s): the photo stays undecoded", type(exc).__name__, exc
        )
        return DECODE_FAILED, None
    if not isinstance(image, bytes | bytearray) or not image:
        log.warning("the WLT photo decoder returned no image bytes: the photo stays undecoded")
        return DECODE_FAILED, None
    return DECODED, bytes(image)
