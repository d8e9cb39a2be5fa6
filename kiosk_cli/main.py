"""The ``kiosk`` command: one entry point, a subcommand per job.

Parts of the firmware add their own subcommands through a ``register(subparsers)`` function in the
modules listed in ``PARTS``. Those modules import their heavy parts (PyAV, Textual) only inside the
command functions, so ``kiosk run`` does not pay for them. ``--config`` is accepted before or after the
subcommand (``kiosk --config F run`` and ``kiosk run --config F``).

This module sits above every process and the simulators: it only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

# module -> the subcommands it registers (kept here so `kiosk --help` needs no heavy import)
PARTS = (
    "sim.hardware_cli",  # kiosk sim ...
    "sim.session_cli",  # kiosk sim county, kiosk sim clerk ... (hooks into sim.hardware_cli)
    "edge_media.cli",  # kiosk media ...
    "kiosk_ui.cli",  # kiosk ui ...
    "provisioning.cli",  # kiosk fleet acl ...
    "provisioning.device_cli",  # kiosk provision ..., kiosk diag
    "appliance.event_cli",  # kiosk event emit ...
)
CONFIG_HELP = "config file (default: $KIOSK_CONFIG or /etc/kiosk/kiosk.toml)"


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.daemon import main as daemon_main

    return daemon_main(args.config)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.pair:
        from sim.pair_demo import main as pair_main

        return pair_main(args)
    from sim.demo import main as demo_main

    return demo_main(args)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from appliance import config

    path = config.resolve_path(args.path or args.config)
    try:
        cfg = config.check(path)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"# {path}: valid")
    print(json.dumps(config.redacted(cfg), ensure_ascii=False, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk", description="Village service kiosk firmware")
    parser.add_argument("--config", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the appliance daemon")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="run the whole kiosk on simulated hardware with brokers of its own")
    p.add_argument("--headless", action="store_true", help="no UI in this terminal, just the services")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--workdir", help="keep state here instead of a temporary directory")
    p.add_argument(
        "--text-call", action="store_true", help="no video in the call even when Janus is installed"
    )
    p.add_argument(
        "--pair",
        action="store_true",
        help="a main and a backup terminal and the failover arbiter (root: network namespaces)",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="validate a config file and print the effective config")
    c.add_argument("path", nargs="?", help="file to check (default: --config / $KIOSK_CONFIG / /etc/kiosk)")
    c.set_defaults(func=_cmd_config_check)

    for module in PARTS:
        importlib.import_module(module).register(sub)
    _accept_config_anywhere(sub)
    return parser


def _accept_config_anywhere(sub: argparse._SubParsersAction) -> None:
    """Give every (nested) subcommand its own ``--config``. SUPPRESS keeps a value given before the
    subcommand when none is given after it."""
    for parser in set(sub.choices.values()):
        if not any("--config" in a.option_strings for a in parser._actions):
            parser.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_config_anywhere(action)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
