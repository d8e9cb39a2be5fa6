"""The fleet contract as machine-readable documents, rendered from the firmware's own models.

``docs/schema/fleet.schema.json``: one JSON Schema 2020-12 document, ``$defs`` per message
(``appliance.messages``) and ``x-channels`` (channel -> message). ``docs/asyncapi.yaml``: an AsyncAPI
3.0.0 document of the topics, from the device's point of view, whose messages point into the schema.

``python -m sim.schema_doc`` exits 1 when the files differ from what the firmware renders now;
``--write`` rewrites them. The command list is the one a kiosk with every peripheral fitted registers
(the appliance started in-process on the demo's simulated hardware, as ``sim.commands_doc`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from appliance.messages import CHANNELS, fleet_schema
from kiosk_core.commands import CommandSpec
from sim.commands_doc import registered_commands

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMA = DOCS / "schema" / "fleet.schema.json"
ASYNCAPI = DOCS / "asyncapi.yaml"
SCHEMA_REF = "schema/fleet.schema.json"  # relative to docs/asyncapi.yaml

ROOT = "kiosk/v1/{province}/{city}/{county}/{township}/{village}/{device_id}"
PARAMETERS = {
    "province": "province code, 2 digits (device.region[0])",
    "city": "city code, 4 digits starting with the province's",
    "county": "county code, 6 digits starting with the city's",
    "township": "township code, 9 digits starting with the county's",
    "village": "village code, 12 digits starting with the township's",
    "device_id": "device.id, [A-Za-z0-9_-]{1,64}, also the MQTT client id",
}
# channel -> (action from the device's point of view, retained, summary)
DEVICE_CHANNELS: dict[str, tuple[str, bool, str]] = {
    "state": ("send", True, "presence: online / offline / lost (the Will), with the connection's epoch"),
    "birth": ("send", True, "who and what the device is; re-sent on every connect and on rebirth"),
    "telemetry": ("send", False, "periodic health (fleet.telemetry_interval_s)"),
    "event": ("send", False, "durable events: epoch + seq, in seq order; de-duplicate by (device_id, seq)"),
    "config/desired": ("receive", True, "versioned configuration overlay from the platform"),
    "config/reported": ("send", True, "the result of the newest desired version seen"),
}


def _op_name(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("/", ".").split("."))


def asyncapi(schema: dict[str, Any], specs: list[CommandSpec]) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (channels, operations, messages) for ``schema``."""
    channels_of = schema["x-channels"]
    params = {name: {"$ref": f"#/components/parameters/{name}"} for name in PARAMETERS}

    def payload(channel: str) -> dict[str, Any]:
        return {"$ref": SCHEMA_REF + channels_of[channel]}

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel, (action, retained, summary) in DEVICE_CHANNELS.items():
        assert channel in CHANNELS, channel
        key = channel.replace("/", "_")
        messages[key] = {
            "name": key,
            "title": channel,
            "summary": summary,
            "contentType": "application/json",
            "payload": payload(channel),
        }
        channels[key] = {
            "address": f"{ROOT}/{channel}",
            "description": summary,
            "parameters": params,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"{action}{_op_name(channel)}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
            "bindings": {"mqtt": {"qos": 1, "retain": retained, "bindingVersion": "0.2.0"}},
        }
    for spec in sorted(specs, key=lambda s: s.name):
        key = "cmd_" + spec.name.replace(".", "_")
        reply_key = "reply_" + spec.name.replace(".", "_")
        personal = " The reply carries personal data and is never stored." if spec.personal else ""
        messages[key] = {
            "name": key,
            "title": f"cmd/{spec.name}",
            "summary": spec.summary,
            "contentType": "application/json",
            "payload": payload(f"cmd/{spec.name}"),
            "bindings": {
                "mqtt": {
                    "responseTopic": {
                        "type": "string",
                        "description": "required; under one of fleet.reply_prefixes",
                    },
                    "correlationData": {"type": "string", "format": "binary"},
                    "bindingVersion": "0.2.0",
                }
            },
        }
        messages[reply_key] = {
            "name": reply_key,
            "title": f"reply to cmd/{spec.name}",
            "summary": f"status + the result of {spec.name}, with the request's Correlation Data.{personal}",
            "contentType": "application/json",
            "payload": payload(f"reply/{spec.name}"),
        }
        channels[key] = {
            "address": f"{ROOT}/cmd/{spec.name}",
            "description": f"{spec.summary} (served by {spec.process})",
            "parameters": params,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"receive{_op_name('cmd.' + spec.name)}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": spec.summary,
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
            "bindings": {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}},
            "reply": {
                "address": {
                    "description": "the request's MQTT 5 Response Topic",
                    "location": "$message.header#/responseTopic",
                },
                "channel": {"$ref": "#/channels/reply"},
                "messages": [{"$ref": f"#/channels/reply/messages/{reply_key}"}],
            },
        }
    channels["reply"] = {
        "address": None,
        "description": "the Response Topic each request names (under fleet.reply_prefixes); QoS 1, "
        "not retained, with the request's Correlation Data",
        "messages": {
            k: {"$ref": f"#/components/messages/{k}"} for k in sorted(messages) if k.startswith("reply_")
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "village-kiosk fleet contract",
            "version": "1.0.0",
            "description": "Generated by `python -m sim.schema_doc --write` from appliance/messages.py "
            "and the firmware's CommandSpecs; the prose contract is docs/mqtt.md. Operations are the "
            "device's: it sends state, birth, telemetry, event, config/reported and replies, and "
            "receives cmd/{name} and config/desired. Payloads are the $defs of "
            "docs/schema/fleet.schema.json (JSON Schema 2020-12).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "central": {
                "host": "broker.example:8883",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "placeholder: the central platform's broker ([fleet] host, port, tls)",
                "bindings": {
                    "mqtt": {
                        "clientId": "{device_id}",
                        "cleanSession": False,
                        "sessionExpiryInterval": 86400,
                        "lastWill": {"topic": f"{ROOT}/state", "qos": 1, "retain": True},
                        "bindingVersion": "0.2.0",
                    }
                },
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "parameters": {name: {"description": text} for name, text in PARAMETERS.items()},
        },
    }


def _scalar(value: Any) -> str:
    # JSON scalars are YAML flow scalars (a JSON string is a YAML double-quoted string).
    return json.dumps(value, ensure_ascii=False)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON data (dicts, lists, scalars); every string quoted, keys too."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{_scalar(k)}:")
                lines.append(to_yaml(v, indent + 2))
            else:
                lines.append(f"{pad}{_scalar(k)}: {_scalar(v)}")
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict | list) and v:
                inner = to_yaml(v, indent + 2)
                lines.append(f"{pad}- {inner[indent + 2 :]}")
            else:
                lines.append(f"{pad}- {_scalar(v)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


def render(specs: list[CommandSpec]) -> dict[Path, str]:
    schema = fleet_schema(specs)
    header = "# Generated by `python -m sim.schema_doc --write`; do not edit.\n"
    return {
        SCHEMA: json.dumps(schema, ensure_ascii=False, indent=1) + "\n",
        ASYNCAPI: header + to_yaml(asyncapi(schema, specs)) + "\n",
    }


def stale(files: dict[Path, str]) -> list[Path]:
    """The files whose content on disk differs from ``files``."""
    return [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files in docs/")
    args = parser.parse_args(argv)
    files = render(asyncio.run(registered_commands()))
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return 0
    old = stale(files)
    for path in old:
        print(f"{path}: out of date; run: python -m sim.schema_doc --write", file=sys.stderr)
    return 1 if old else 0


if __name__ == "__main__":
    sys.exit(main())
