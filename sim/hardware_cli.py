"""``kiosk sim ...``: act on the running kiosk's simulated hardware over the local bus.

    kiosk --config kiosk.toml sim card present zhang-san
    kiosk sim card remove
    kiosk sim button press | hold
    kiosk sim presence [--clear]
    kiosk sim unplug card_reader | switcher | camera.room_main | doccam
    kiosk sim replug card_reader
    kiosk sim fault card_reader noise [--count 3]
    kiosk sim fault switcher garbage | silence | error --code E22 | drop | ignore | slow | clear
    kiosk sim fault printer no_paper | near_end | cover_open | offline | clear
    kiosk sim status

Card reader, switcher and GPIO actions go to the appliance's RPC service ``sim``; camera actions go to
the media process (service ``media``, method ``sim``). Other parts add their own ``kiosk sim X``
subcommands with ``on_sim_register(hook)`` (any time; the hook gets ``add_sim_command``), and
reuse ``call_service`` to reach the bus.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

APPLIANCE_DEVICES = ("card_reader", "switcher", "printer")

Hook = Callable[[Callable[[str, str], argparse.ArgumentParser]], None]

_sim_subparsers: Any = None  # argparse._SubParsersAction of the latest `kiosk sim`
_hooks: list[Hook] = []  # every hook ever registered: applied to each new `kiosk sim` parser
_applied: list[Hook] = []  # hooks already applied to the current one


def add_sim_command(name: str, help: str) -> argparse.ArgumentParser:
    """Add ``kiosk sim NAME``; set its handler with ``parser.set_defaults(func=...)``."""
    if _sim_subparsers is None:
        raise RuntimeError("sim.hardware_cli.register() has not run yet: use on_sim_register(hook) instead")
    return _sim_subparsers.add_parser(name, help=help, description=help)


def on_sim_register(hook: Hook) -> None:
    """Have ``hook(add_sim_command)`` add subcommands to ``kiosk sim``.

    Safe whatever the plug-in order and however often the parser is built: the hook is kept and applied
    once to every ``kiosk sim`` parser (now, if one exists and does not have it yet).
    """
    if hook not in _hooks:
        _hooks.append(hook)
    if _sim_subparsers is not None and hook not in _applied:
        _applied.append(hook)
        hook(add_sim_command)


def call_service(
    args: argparse.Namespace, service: str, method: str, params: dict[str, Any], timeout_s: float = 10.0
) -> int:
    """Call ``service.method`` on the local bus named by ``--config``; print the reply as JSON.

    Exit status: 0 on success, 1 when the service answers an error, 2 for an unusable config.
    """
    import asyncio

    from appliance import config
    from kiosk_core.errors import CommandError, ConfigError
    from kiosk_core.localbus import LocalBus

    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    async def call() -> dict[str, Any]:
        bus = LocalBus(cfg.bus.host, cfg.bus.port, name="kiosk-sim")
        await bus.start(wait_s=3)
        try:
            return await bus.call(service, method, params, timeout_s=timeout_s)
        finally:
            await bus.stop()

    try:
        reply = asyncio.run(call())
    except CommandError as exc:
        print(f"{service}.{method}: error {exc.status}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply, ensure_ascii=False, indent=2))
    return 0


def _camera_source(device: str) -> str | None:
    """``camera.room_main`` / ``room_main`` -> ``room_main``; ``doccam`` -> ``doccam``; None for ours."""
    if device in APPLIANCE_DEVICES:
        return None
    return device.removeprefix("camera.")


def _cmd_card(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"action": args.action}
    if args.action == "present":
        if not args.card:
            print(
                "kiosk sim card present: name the sample card (kiosk sim card samples lists them)",
                file=sys.stderr,
            )
            return 2
        params["card"] = args.card
    return call_service(args, "sim", "card", params)


def _cmd_button(args: argparse.Namespace) -> int:
    return call_service(args, "sim", "button", {"action": args.action})


def _cmd_presence(args: argparse.Namespace) -> int:
    return call_service(args, "sim", "presence", {"action": "cleared" if args.clear else "detected"})


def _cmd_plug(args: argparse.Namespace) -> int:
    action = args.sim_command  # unplug | replug
    source = _camera_source(args.device)
    if source is not None:
        return call_service(args, "media", "sim", {"action": action, "source": source})
    return call_service(args, "sim", action, {"device": args.device})


def _cmd_fault(args: argparse.Namespace) -> int:
    source = _camera_source(args.device)
    if source is not None:
        return call_service(args, "media", "sim", {"action": args.fault, "source": source})
    params: dict[str, Any] = {"device": args.device, "fault": args.fault, "count": args.count}
    if args.code:
        params["code"] = args.code
    return call_service(args, "sim", "fault", params)


def _cmd_status(args: argparse.Namespace) -> int:
    return call_service(args, "sim", "status", {})


def register(subparsers: Any) -> None:
    global _sim_subparsers
    p = subparsers.add_parser(
        "sim",
        help="act on the running kiosk's simulated hardware",
        description="Present cards, press buttons, unplug devices and inject faults on "
        "the simulated hardware of a running kiosk (config --config selects the bus).",
    )
    sub = p.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    _sim_subparsers = sub

    c = sub.add_parser("card", help="the ID card reader: present NAME | remove | samples | status")
    c.add_argument("action", choices=("present", "remove", "samples", "status"))
    c.add_argument("card", nargs="?", help="sample card name (present)")
    c.set_defaults(func=_cmd_card)

    c = sub.add_parser("button", help="the help button: press (asks for staff) | hold (technician mode)")
    c.add_argument("action", choices=("press", "hold"))
    c.set_defaults(func=_cmd_button)

    c = sub.add_parser("presence", help="the presence sensor sees someone (or, with --clear, no one)")
    c.add_argument("--clear", action="store_true", help="nobody there any more")
    c.set_defaults(func=_cmd_presence)

    for action, text in (("unplug", "pull a device's cable"), ("replug", "plug a device back in")):
        c = sub.add_parser(action, help=f"{text}: card_reader | switcher | printer | camera.NAME | doccam")
        c.add_argument("device")
        c.set_defaults(func=_cmd_plug)

    c = sub.add_parser(
        "fault",
        help="inject a fault: card_reader noise|checksum|truncated|slow|...; "
        "switcher garbage|silence|error|drop|ignore|slow; printer no_paper|near_end|cover_open|offline "
        "(until cleared); 'clear' removes pending faults",
    )
    c.add_argument("device", help="card_reader | switcher | printer | camera.NAME | doccam")
    c.add_argument("fault")
    c.add_argument("--count", type=int, default=1, help="how many replies it spoils (default 1)")
    c.add_argument("--code", help="switcher error code for 'error' (e.g. E22, 006)")
    c.set_defaults(func=_cmd_fault)

    c = sub.add_parser("status", help="what is simulated, its health, pending faults")
    c.set_defaults(func=_cmd_status)

    _applied.clear()
    for hook in list(_hooks):
        _applied.append(hook)
        hook(add_sim_command)
