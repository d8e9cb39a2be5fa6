"""``kiosk ui``: run the kiosk screen in this terminal against the local bus.

The bus is the one named by the global ``--config`` (``[bus] host/port``), or ``--bus-host/--bus-port``
(which win). Textual and the screens are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("ui", help="run the kiosk screen (Textual) on the local bus")
    p.add_argument("--bus-host", help="local bus host (default: [bus] host of the config, else 127.0.0.1)")
    p.add_argument(
        "--bus-port", type=int, help="local bus port (default: [bus] port of the config, else 1883)"
    )
    p.add_argument(
        "--lang",
        choices=("zh-CN", "en"),
        default="zh-CN",
        help="language until the appliance's state says otherwise",
    )
    p.add_argument("--log-file", help="write logs here (the terminal belongs to the screen)")
    p.set_defaults(func=_cmd_ui)


def bus_address(args: argparse.Namespace) -> tuple[str, int]:
    """(host, port) of the local bus: explicit flags, else the config file, else the defaults."""
    host, port = "127.0.0.1", 1883
    if getattr(args, "config", None) or (args.bus_host is None or args.bus_port is None):
        from kiosk_core import config

        path = config.resolve_path(getattr(args, "config", None))
        if getattr(args, "config", None) or path.exists():
            cfg = config.load(config.SharedConfig, path)
            host, port = cfg.bus.host, cfg.bus.port
    return args.bus_host or host, args.bus_port or port


def _cmd_ui(args: argparse.Namespace) -> int:
    from kiosk_core.errors import ConfigError

    try:
        host, port = bus_address(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    # Logging must never write into the terminal the kiosk screen is drawn on.
    root = logging.getLogger()
    if args.log_file:
        handler: logging.Handler = logging.FileHandler(args.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    from kiosk_ui.app import KioskApp

    KioskApp(host, port, language=args.lang, freeze_gc=True).run()
    return 0
