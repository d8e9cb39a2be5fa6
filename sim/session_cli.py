"""``kiosk sim county`` and ``kiosk sim clerk ...``: the simulated county centre, or a person as the clerk.

    kiosk --config kiosk.toml sim county [--manual-calls] [--answer-after 3] [--seconds N]
                                         [--janus-url URL [--janus-room 1234]]
    kiosk sim clerk status
    kiosk sim clerk accept [--name 李明] [--department minzheng]
    kiosk sim clerk queue POSITION WAIT_S
    kiosk sim clerk message TEXT
    kiosk sim clerk request-document NAME
    kiosk sim clerk approve [--application-no SQ...] [--override-missing]
    kiosk sim clerk reject REASON
    kiosk sim clerk end
    kiosk sim clerk documents [--out DIR]

Both speak only the fleet contract on the central broker named by ``[fleet]`` in the config; the clerk
commands act on the device of that same config. ``register_sim`` adds them to ``kiosk sim``; ``register``
is the ``kiosk_cli.main`` plug-in hook that does so through ``sim.hardware_cli.on_sim_register``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

AddCommand = Callable[[str, str], argparse.ArgumentParser]
CLERK_ACTIONS = (
    "status",
    "accept",
    "queue",
    "message",
    "request-document",
    "approve",
    "reject",
    "end",
    "identity",
    "documents",
)


def register_sim(sim_subparsers: Any) -> None:
    """Add ``county`` and ``clerk`` to the ``kiosk sim`` sub-parsers."""
    _add_commands(lambda name, help: sim_subparsers.add_parser(name, help=help, description=help))


def register(subparsers: Any) -> None:
    """``kiosk_cli.main`` plug-in entry: hook into ``kiosk sim`` (built by ``sim.hardware_cli``)."""
    from sim.hardware_cli import on_sim_register

    on_sim_register(_add_commands)


def _add_commands(add: AddCommand) -> None:
    p = add(
        "county",
        "run a simulated county centre on the central broker (answers calls, progress, appointments)",
    )
    p.add_argument(
        "--manual-calls", action="store_true", help="leave calls to a person (kiosk sim clerk ...)"
    )
    p.add_argument(
        "--answer-after", type=float, default=3.0, metavar="S", help="a clerk answers after S seconds"
    )
    p.add_argument("--step", type=float, default=1.5, metavar="S", help="pause between the clerk's actions")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--janus-url",
        default=None,
        metavar="URL",
        help="the county's Janus (http(s)://…/janus or ws(s)://…): accepted calls carry video there",
    )
    p.add_argument("--janus-room", type=int, default=1234, metavar="N", help="the VideoRoom room (1234)")
    p.set_defaults(func=_cmd_county)

    p = add("clerk", "play the county clerk for the kiosk of --config: " + " | ".join(CLERK_ACTIONS))
    p.add_argument("action", choices=CLERK_ACTIONS)
    p.add_argument(
        "text", nargs="*", help="message text, document name, rejection reason, or POSITION WAIT_S"
    )
    p.add_argument("--session", help="session id (default: the kiosk's current session)")
    p.add_argument("--name", default="李明", help="clerk name (accept)")
    p.add_argument("--clerk-id", default="c-0001", help="clerk id (accept)")
    p.add_argument("--department", default="", help="department id (accept; default: the chosen item's)")
    p.add_argument("--application-no", default="", help="application number (approve)")
    p.add_argument(
        "--override-missing",
        action="store_true",
        help="approve although a required document is still missing (without it: 409 listing them)",
    )
    p.add_argument("--out", help="directory to save fetched documents (documents)")
    p.set_defaults(func=_cmd_clerk)


def _load(args: argparse.Namespace) -> Any:
    from appliance import config

    return config.load(config.resolve_path(args.config))


def _link(cfg: Any, name: str) -> Any:
    from kiosk_core.mqtt import Tls
    from sim.county import FleetRequester

    tls = None
    if cfg.fleet.tls is not None:
        t = cfg.fleet.tls
        tls = Tls(
            ca=str(t.ca),
            cert=str(t.cert) if t.cert else None,
            key=str(t.key) if t.key else None,
            handshake_timeout_s=t.handshake_timeout_s,
        )
    password = cfg.fleet.password.get_secret_value() if cfg.fleet.password else None
    return FleetRequester(
        cfg.fleet.host, cfg.fleet.port, tls=tls, username=cfg.fleet.username, password=password, name=name
    )


def _cmd_county(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from appliance.config import ConfigError
    from sim.county import CountyCentre

    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from kiosk_core import logs

    logs.setup("INFO")

    async def main() -> None:
        county = CountyCentre(
            _link(cfg, "county"),
            clerk=not args.manual_calls,
            answer_after_s=args.answer_after,
            step_s=args.step,
            county_code=cfg.device.region[2],
            janus_url=args.janus_url,
            janus_room=args.janus_room,
        )
        await county.start()
        print(
            f"county centre on {cfg.fleet.host}:{cfg.fleet.port}, "
            f"calls {'left to kiosk sim clerk' if args.manual_calls else 'answered automatically'}"
            + (f", video on {args.janus_url} room {args.janus_room}" if args.janus_url else ", text only"),
            flush=True,
        )
        try:
            if args.seconds is not None:
                await asyncio.sleep(args.seconds)
            else:
                await asyncio.Event().wait()
        finally:
            await county.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _save(directory: Any, doc_id: str, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{doc_id}.bin").write_bytes(data)


def _cmd_clerk(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from appliance.config import ConfigError
    from kiosk_core.errors import CommandError
    from sim.county import ClerkConsole

    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    text = " ".join(args.text).strip()
    if args.action in ("message", "request-document", "reject") and not text:
        print(f"kiosk sim clerk {args.action} needs a text", file=sys.stderr)
        return 2
    position, wait_s = 1, 60
    if args.action == "queue":
        try:
            position, wait_s = (int(x) for x in args.text)
        except ValueError:
            print("kiosk sim clerk queue POSITION WAIT_S (two integers)", file=sys.stderr)
            return 2

    async def main() -> dict[str, Any]:
        link = _link(cfg, "clerk")
        await link.start()
        try:
            console = ClerkConsole(link, cfg.topic_root)
            if args.action == "documents":
                docs = await console.fetch_all(args.session)
                out = []
                for doc in docs:
                    if args.out:
                        await asyncio.to_thread(_save, Path(args.out), doc.doc_id, doc.data)
                    out.append(
                        {
                            "doc_id": doc.doc_id,
                            "bytes": len(doc.data),
                            "chunks": doc.chunks,
                            "sha256": doc.sha256,
                            "verified": doc.verified,
                        }
                    )
                return {"status": 200, "documents": out}
            return await console.act(
                args.action,
                session_id=args.session,
                text=text,
                department=args.department,
                clerk_name=args.name,
                clerk_id=args.clerk_id,
                application_no=args.application_no,
                position=position,
                wait_s=wait_s,
                override_missing=args.override_missing,
            )
        finally:
            await link.stop()

    try:
        reply = asyncio.run(main())
    except CommandError as exc:
        reply = {"status": exc.status, "error": str(exc), **exc.detail}
    except TimeoutError:
        reply = {"status": 503, "error": f"central broker {cfg.fleet.host}:{cfg.fleet.port} unreachable"}
    print(json.dumps(reply, ensure_ascii=False, indent=2))
    missing = reply.get("missing_documents")
    if args.action == "approve" and reply.get("status") == 409 and isinstance(missing, list):
        print(
            f"NOT APPROVED: required document(s) still missing: {', '.join(map(str, missing))}.\n"
            "Ask the villager for them (request-document), or approve anyway with:\n"
            "  kiosk sim clerk approve --override-missing",
            file=sys.stderr,
        )
    return 0 if reply.get("status") == 200 else 1
