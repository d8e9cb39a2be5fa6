"""The ``kiosk`` command: one entry point, a subcommand per job.

Parts of the firmware add their own subcommands through a ``register(subparsers)`` function in the
modules listed in ``PLUGINS`` (imported lazily, so ``kiosk run`` does not pay for the UI or PyAV).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

# module -> the subcommands it registers (kept here so `kiosk --help` needs no heavy import)
PLUGINS = (
    "drivers.cli",  # kiosk sim ...
    "appliance.session.cli",  # kiosk sim county, kiosk sim clerk ... (hooks into drivers.cli)
    "edge_media.cli",  # kiosk media ...
    "kiosk_ui.cli",  # kiosk ui ...
    "provisioning.cli",  # kiosk provision ..., kiosk selftest
)


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.daemon import main as daemon_main

    return daemon_main(args.config)


def _cmd_demo(args: argparse.Namespace) -> int:
    from appliance.demo import main as demo_main

    return demo_main(args)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from appliance import config

    path = config.resolve_path(args.path or args.config)
    try:
        cfg = config.load(path)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"# {path}: valid")
    print(json.dumps(config.redacted(cfg), ensure_ascii=False, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk", description="Village service kiosk firmware")
    parser.add_argument("--config", help="config file (default: $KIOSK_CONFIG or /etc/kiosk/kiosk.toml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the appliance daemon")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="run the whole kiosk on simulated hardware with brokers of its own")
    p.add_argument("--headless", action="store_true", help="no UI in this terminal, just the services")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--workdir", help="keep state here instead of a temporary directory")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="validate a config file and print the effective config")
    c.add_argument("path", nargs="?", help="file to check (default: --config / $KIOSK_CONFIG / /etc/kiosk)")
    c.set_defaults(func=_cmd_config_check)

    for module in PLUGINS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
