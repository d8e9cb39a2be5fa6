"""``kiosk event emit TYPE [JSON]``: hand one event to the appliance and wait until it is stored.

For scripts and technicians on the device (and a worked example of the producer side of
``docs/local-bus.md``)::

    kiosk event emit maintenance.visit '{"by": "tech-07", "note": "fan cleaned"}'

It exits 0 only once the appliance has committed the event to its outbox (the stored reply, not the
local broker's PUBACK), printing the event's id and seq. Re-running with the same ``--id`` (and
``--producer``) stores nothing twice: the second run says ``duplicate``.

Exit status: 0 stored; 1 not confirmed in time (it may still be stored later, never twice: re-run
with the same ``--id`` to find out); 2 unusable arguments or config; 3 the appliance refused the event
(the message says why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

EXIT_STORED, EXIT_TIMEOUT, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


def _cmd_emit(args: argparse.Namespace) -> int:
    from appliance.intake import RejectedEvent, parse_local_event
    from kiosk_core import config
    from kiosk_core.errors import CommandError, ConfigError
    from kiosk_core.localbus import LocalBus
    from kiosk_core.payload import decode_json_object, dumps

    if not 0 < args.timeout <= 86400:
        print("kiosk event emit: --timeout must be between 0 and 86400 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        data = decode_json_object(args.data.encode(), "event data") if args.data else {}
    except ValueError as exc:
        print(f"kiosk event emit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    event_id = args.id or f"cli-{uuid.uuid4().hex}"
    try:
        # The appliance would refuse it the same way; saying so here needs no round trip.
        parse_local_event(dumps({"type": args.type, "data": data, "id": event_id, "producer": args.producer}))
    except RejectedEvent as exc:
        print(f"kiosk event emit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = config.load(config.SharedConfig, args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE

    async def emit() -> Any:
        bus = LocalBus(cfg.bus.host, cfg.bus.port, name=args.producer)
        await bus.start(wait_s=None)
        try:
            return await bus.publish_event(
                args.type, data, id=event_id, producer=args.producer, timeout_s=args.timeout
            )
        finally:
            await bus.stop()

    try:
        stored = asyncio.run(emit())
    except TimeoutError as exc:
        print(
            f"kiosk event emit: not confirmed within {args.timeout:g} s: {exc}. It may still be stored "
            f"later, never twice: re-run with --id {event_id} to find out.",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    except CommandError as exc:
        print(f"kiosk event emit: refused by the appliance ({exc.status}): {exc}", file=sys.stderr)
        return EXIT_REFUSED
    out = {"stored": True, "id": stored.id, "producer": args.producer}
    out.update({"duplicate": True} if stored.duplicate else {"seq": stored.seq})
    print(json.dumps(out, ensure_ascii=False))
    return EXIT_STORED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("event", help="hand events to the appliance (local producers)")
    esub = p.add_subparsers(dest="event_command", required=True, metavar="ACTION")
    e = esub.add_parser(
        "emit",
        help="store one event in the appliance's outbox; exit 0 only once it is stored",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("type", help="dotted lower-case words, e.g. maintenance.visit")
    e.add_argument("data", nargs="?", help="a JSON object (default {})")
    e.add_argument("--id", help="unique per producer; re-using it never stores twice (default: random)")
    e.add_argument("--producer", default="cli", help="producer name (default: cli)")
    e.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the stored reply (default 30)"
    )
    e.set_defaults(func=_cmd_emit)
