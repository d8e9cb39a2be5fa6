"""Every fleet message a test sees, checked against docs/schema/fleet.schema.json.

``SCHEMA.problems(channel, payload)`` decodes a payload as strictly as the contract demands (UTF-8, a
JSON object, no NaN/Infinity/1e400) and validates it against the ``$defs`` entry the document's
``x-channels`` names for ``channel`` (``state``, ``event``, ``cmd/ping``, ``reply/ping``, ...).
``Platform`` (fleet_helpers) calls it for everything the device sends and fails the test that saw a
message off the schema; ``VALIDATED`` counts the messages checked (printed at the end of a run).
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from kiosk_core.payload import decode_json_object

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "schema" / "fleet.schema.json"
# The device's own channels below its root (requests and config/desired come from the platform side).
DEVICE_CHANNELS = ("state", "birth", "telemetry", "event", "config/reported")
MAX_REPLY = 4 << 20  # an inline still of the document camera is larger than the decoder's default

VALIDATED: Counter[str] = Counter()


class FleetSchema:
    def __init__(self, path: Path = SCHEMA_PATH) -> None:
        self.doc = json.loads(path.read_text(encoding="utf-8"))
        self.channels: dict[str, str] = self.doc["x-channels"]

    @cache  # noqa: B019 - one validator per pointer for the whole run; the instance lives as long
    def validator(self, pointer: str) -> Draft202012Validator:
        schema = {"$schema": self.doc["$schema"], "$defs": self.doc["$defs"], "$ref": pointer}
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema)

    def reply_channel(self, name: Any) -> str:
        """``reply/{name}`` for a command the firmware has, else ``reply`` (any reply, e.g. a 404)."""
        channel = f"reply/{name}"
        return channel if channel in self.channels else "reply"

    def errors(self, channel: str, obj: Any) -> list[str]:
        """Where ``obj`` (decoded JSON) breaks the schema of ``channel``, as ``path: message`` lines."""
        pointer = self.channels.get(channel)
        if pointer is None:
            return [f"{channel}: no schema for this channel"]
        found = sorted(self.validator(pointer).iter_errors(obj), key=lambda e: list(map(str, e.path)))
        return [f"{channel} {'/'.join(map(str, e.path)) or '(root)'}: {e.message[:300]}" for e in found]

    def problems(self, channel: str, payload: bytes) -> list[str]:
        """What is wrong with ``payload`` on ``channel``; an empty list when it fits. Counts it."""
        VALIDATED[channel.split("/")[0]] += 1
        try:
            obj = decode_json_object(payload, channel, max_bytes=MAX_REPLY)
        except ValueError as exc:
            return [str(exc)]
        return self.errors(channel, obj)


SCHEMA = FleetSchema()


def summary() -> str:
    total = sum(VALIDATED.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(VALIDATED.items()))
    return f"fleet schema: {total} messages validated against {SCHEMA_PATH.name} ({parts})"
