"""``kiosk provision ...`` and ``kiosk diag``: what a technician runs on the kiosk itself.

* ``kiosk provision`` (= ``kiosk provision wizard``): the Textual wizard on a terminal; with
  ``--non-interactive`` (or without a terminal) the same steps from flags, for scripted roll-outs.
  ``--csr-only`` makes the key, the CSR and its QR code; a second run with ``--ca`` and ``--cert``
  installs the signed certificate and writes the config.
* ``kiosk provision install``: the system install (``provisioning.install``, when this build has it).
* ``kiosk provision selftest``: the hardware self-test (``provisioning.selftest``).
* ``kiosk provision factory-reset``: back to a blank device, firmware kept.
* ``kiosk diag``: a diagnostics bundle (``appliance.diagnostics``).

Exit status: 0 done, 1 a check or step failed (a self-test failure, a file that could not be
removed), 2 a usage problem or an input that was refused (nothing written).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from provisioning import install

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "kiosk provision"


def _identity_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("identity and keys (the wizard's steps as flags)")
    g.add_argument(
        "--non-interactive", action="store_true", help="no wizard, no prompts: everything from flags"
    )
    g.add_argument("--device-id", help="the kiosk's id ([A-Za-z0-9_-], 1-64), unique in the fleet")
    g.add_argument("--name", help="the service room's name, e.g. 赤柯山村便民服务站")
    g.add_argument(
        "--region",
        help="province,city,county,township,village codes, e.g. 33,3308,330803,330803100,330803100201",
    )
    g.add_argument("--role", choices=("main", "backup"), help="main or backup terminal")
    g.add_argument("--broker", help="the platform's MQTT broker, host:port")
    g.add_argument("--ca", type=Path, help="the platform's CA certificate (PEM)")
    g.add_argument("--cert", type=Path, help="this device's signed certificate (PEM)")
    g.add_argument(
        "--csr-only",
        action="store_true",
        help="make the device key, the CSR and its QR code; write no config",
    )
    g.add_argument(
        "--new-key",
        action="store_true",
        help="replace an existing device key (its certificate becomes useless)",
    )
    g.add_argument(
        "--hardware", type=Path, help="a TOML file with this room's [drivers.*] (and [media]) sections"
    )
    g.add_argument("--data-dir", type=Path, help="storage.data_dir (default: kept, or /var/lib/kiosk)")
    g.add_argument(
        "--regions",
        type=Path,
        help="a region table (JSON, as provisioning/regions.json) instead of the bundled one",
    )
    g.add_argument(
        "--selftest", action="store_true", help="run the hardware self-test after writing the config"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "provision",
        help="turn this device into a kiosk: wizard, install, self-test, factory reset",
        description="Without an action: the provisioning wizard (or, with --non-interactive, its steps from flags).",
    )
    _identity_flags(p)
    p.set_defaults(func=_cmd_wizard)
    psub = p.add_subparsers(dest="provision_command", metavar="ACTION")

    # SUPPRESS: a flag given before "wizard" is not reset by the subcommand's own default.
    w = psub.add_parser(
        "wizard", help="the provisioning wizard (the default)", argument_default=argparse.SUPPRESS
    )
    _identity_flags(w)
    w.set_defaults(func=_cmd_wizard)

    i = psub.add_parser(
        "install", help="install the firmware's services into a root (systemd units, users, dirs)"
    )
    install.add_arguments(i)
    i.set_defaults(func=_cmd_install)

    s = psub.add_parser(
        "selftest", help="the hardware self-test: card reader, switcher, cameras, LED, relays, buzzer"
    )
    s.add_argument("--no-save", action="store_true", help="do not save the report under the data dir")
    s.set_defaults(func=_cmd_selftest)

    r = psub.add_parser(
        "factory-reset", help="wipe personal data, keys, recordings and config; keep the firmware"
    )
    r.add_argument("--yes", action="store_true", help="do not ask (otherwise type the device id to confirm)")
    r.set_defaults(func=_cmd_factory_reset)

    d = subparsers.add_parser(
        "diag", help="write a diagnostics bundle (logs, redacted config, versions, health)"
    )
    d.add_argument("--out", type=Path, help="directory for the bundle (default: <data_dir>/diag)")
    d.add_argument("--bus-timeout", type=float, default=2.0, help="seconds to wait for the local bus's state")
    d.set_defaults(func=_cmd_diag)


def _config_path(args: argparse.Namespace) -> Path:
    from kiosk_core.config import resolve_path

    return resolve_path(getattr(args, "config", None))


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


# --- the wizard and its flags ------------------------------------------------------------------------


def _interactive(args: argparse.Namespace) -> bool:
    return not args.non_interactive and sys.stdin.isatty() and sys.stdout.isatty()


def _cmd_wizard(args: argparse.Namespace) -> int:
    from provisioning.errors import ProvisioningError
    from provisioning.identity import RegionTable

    try:
        regions = RegionTable.load(args.regions)
    except ProvisioningError as exc:
        _err(exc.message)
        return EXIT_USAGE
    if _interactive(args):
        from provisioning.wizard import Prefill, ProvisionWizard

        app = ProvisionWizard(
            config_path=_config_path(args),
            regions=regions,
            prefill=Prefill(
                device_id=args.device_id or "",
                name=args.name or "",
                region=args.region or "",
                role=args.role or "main",
                broker=args.broker or "",
                ca=str(args.ca or ""),
                cert=str(args.cert or ""),
            ),
            hardware=args.hardware,
            data_dir=args.data_dir,
        )
        result = app.run()
        return int(result if isinstance(result, int) else EXIT_FAILED)
    return _non_interactive(args, regions)


def _non_interactive(args: argparse.Namespace, regions: Any) -> int:
    from kiosk_core.config import read_toml
    from kiosk_core.errors import ConfigError
    from provisioning import steps
    from provisioning.errors import ProvisioningError
    from provisioning.identity import check_identity

    required = ["device_id", "name", "region", "role", "broker"] + ([] if args.csr_only else ["ca", "cert"])
    missing = [f"--{flag.replace('_', '-')}" for flag in required if not getattr(args, flag)]
    if missing:
        more = (
            ""
            if args.csr_only or not {"--ca", "--cert"} & set(missing)
            else (" (or --csr-only to make the device key and the CSR first)")
        )
        _err(f"missing {', '.join(missing)}{more}")
        return EXIT_USAGE
    config = _config_path(args)
    try:
        identity = check_identity(
            device_id=args.device_id,
            name=args.name,
            region=args.region,
            role=args.role,
            broker=args.broker,
            regions=regions,
        )
        base = steps.existing_config(config)
        hardware = read_toml(args.hardware) if args.hardware else None
        paths = steps.Paths.for_config(config, base)
        if args.csr_only:
            # The config the second run will write must be one the appliance accepts: find out now.
            steps.render_config(
                steps.build_config(identity, paths, base=base, hardware=hardware, data_dir=args.data_dir),
                str(config),
            )
            result = steps.write_csr(identity, paths, regions, new_key=args.new_key)
            print(_csr_text(identity, regions, result))
            return EXIT_OK
        installed = steps.install(
            identity,
            paths,
            cert_file=args.cert,
            ca_file=args.ca,
            base=base,
            hardware=hardware,
            data_dir=args.data_dir,
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except ProvisioningError as exc:
        _err("refused, nothing written:")
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    cert = installed.cert
    print(
        f"{installed.config}: written for {identity.device_id} ({regions.describe(identity.region)}), broker {identity.broker}"
    )
    if cert is not None:
        print(f"  certificate {cert.subject}, issued by {cert.issuer}, valid until {cert.not_after:%Y-%m-%d}")
    if args.selftest:
        return _run_selftest(config, save=True)
    return EXIT_OK


def _csr_text(identity: Any, regions: Any, result: Any) -> str:
    return "\n".join(
        [
            result.qr_blocks(),
            f"device      {identity.device_id} ({identity.role}), {regions.describe(identity.region)}",
            f"device key  {result.key_path} ({'new' if result.key_created else 'kept'}, 0600)",
            f"CSR         {result.csr_path}",
            f"CSR SHA-256 {result.fingerprint}",
            f"QR code     {result.qr_png}, {result.qr_svg}  ({result.qr_text})",
            "Register the QR code (or the fingerprint) in the platform, have the CSR signed, then run again "
            "with --ca FILE --cert FILE.",
        ]
    )


# --- install, self-test, factory reset, diag ---------------------------------------------------------


def _cmd_install(args: argparse.Namespace) -> int:
    return int(install.main(args) or 0)


class TextProgress:
    """A one-line progress bar on a terminal, one line per step elsewhere (logs, pipes)."""

    WIDTH = 24

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        filled = round(self.WIDTH * done / max(total, 1))
        line = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done}/{total} {what}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _run_selftest(config: Path, *, save: bool) -> int:
    from appliance import config as appliance_config
    from provisioning.selftest import run_selftest

    try:
        cfg = appliance_config.load(config)
    except appliance_config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    report = asyncio.run(run_selftest(cfg, progress=TextProgress()))
    print(report.text(), end="")
    if save:
        try:
            json_path, text_path = report.save(cfg.storage.data_dir)
            print(f"report: {json_path}, {text_path}")
        except OSError as exc:
            _err(
                f"selftest: the report could not be saved under {cfg.storage.data_dir}: {exc.strerror or exc}"
            )
    return EXIT_OK if report.passed else EXIT_FAILED


def _cmd_selftest(args: argparse.Namespace) -> int:
    return _run_selftest(_config_path(args), save=not args.no_save)


def _cmd_factory_reset(args: argparse.Namespace) -> int:
    from provisioning.errors import ProvisioningError
    from provisioning.factory_reset import execute, plan_reset

    try:
        plan = plan_reset(_config_path(args))
    except ProvisioningError as exc:
        _err("factory-reset: " + exc.message)
        return EXIT_USAGE
    print(plan.describe())
    if not plan.files and not plan.emptied:
        print("nothing to remove: this device is blank already")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            _err("factory-reset: no terminal to confirm on; add --yes to reset without asking")
            return EXIT_USAGE
        expected = plan.device_id or "RESET"
        answer = input(f"type {expected!r} to wipe this kiosk / 输入 {expected} 确认恢复出厂设置: ").strip()
        if answer != expected:
            _err("factory-reset: not confirmed, nothing removed")
            return EXIT_USAGE
    failed = execute(plan)
    if failed:
        _err("factory-reset: could not remove:")
        for line in failed:
            print(f"  - {line}", file=sys.stderr)
        return EXIT_FAILED
    print("factory reset done: the firmware is kept; provision again with `kiosk provision`")
    return EXIT_OK


def _cmd_diag(args: argparse.Namespace) -> int:
    from appliance import config as appliance_config
    from appliance.diagnostics import build_bundle, fetch_health
    from kiosk_core.config import BusConfig

    config = _config_path(args)
    cfg, error = None, None
    try:
        cfg = appliance_config.load(config)
    except appliance_config.ConfigError as exc:
        error = str(exc)
    data_dir = cfg.storage.data_dir if cfg else Path("/var/lib/kiosk")
    bus = cfg.bus if cfg else BusConfig()
    health = asyncio.run(fetch_health(bus.host, bus.port, timeout_s=args.bus_timeout))
    try:
        bundle = build_bundle(
            data_dir=data_dir,
            device_id=cfg.device.id if cfg else "unknown",
            cfg=cfg,
            config_path=config,
            config_error=error,
            health=health,
            out_dir=args.out,
        )
    except OSError as exc:
        print(f"kiosk diag: cannot write the bundle: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{bundle.path}: {bundle.size} bytes, sha256 {bundle.sha256}")
    if error:
        print("(the config did not load: the bundle carries the loader's error and the redacted text)")
    return EXIT_OK
