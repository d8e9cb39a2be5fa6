"""``kiosk fleet ...``: tools for the platform's side of the fleet (not for the device).

``kiosk fleet acl INVENTORY --out DIR`` writes the central broker's ``mosquitto.conf``, ``acl_file`` and
``password_file`` (see ``provisioning.fleet_acl`` and docs/mqtt.md, "Broker ACL (mosquitto)"). Exit
status 2 and nothing written when the inventory or an option is wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiosk_core.fsutil import write_atomic
from provisioning import fleet_acl

USAGE_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fleet", help="platform tools: the central broker's configuration")
    fsub = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    a = fsub.add_parser(
        "acl",
        help="write mosquitto.conf, acl_file and password_file for the central broker from an inventory CSV",
        description="Inventory header: "
        + ",".join(fleet_acl.HEADER)
        + ". Files are written atomically, mode 0600.",
    )
    a.add_argument("inventory", type=Path, help="the inventory CSV (UTF-8)")
    a.add_argument("--out", type=Path, required=True, help="directory to write the three files into")
    a.add_argument(
        "--install-dir",
        help="where the broker will read the files (paths in mosquitto.conf; default: --out, absolute)",
    )
    a.add_argument("--port", type=int, default=8883, help="the listener's port (default 8883)")
    a.add_argument("--bind", help="the listener's address (default: every interface)")
    a.add_argument("--cafile", help="CA for the listener (TLS)")
    a.add_argument("--certfile", help="the broker's certificate (TLS; with --keyfile)")
    a.add_argument("--keyfile", help="the broker's private key (TLS; with --certfile)")
    a.set_defaults(func=_cmd_acl)


def _cmd_acl(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"kiosk fleet acl: {message}", file=sys.stderr)
        return USAGE_ERROR

    if not 1 <= args.port <= 65535:
        return fail(f"--port {args.port} must be 1-65535")
    if bool(args.certfile) != bool(args.keyfile):
        return fail("--certfile and --keyfile go together")
    try:
        data = _read_bounded(args.inventory)
    except OSError as exc:
        return fail(f"cannot read {args.inventory}: {exc.strerror or exc}")
    try:
        accounts = fleet_acl.parse_inventory(data, str(args.inventory))
    except fleet_acl.InventoryError as exc:
        print(exc, file=sys.stderr)
        return USAGE_ERROR
    out = args.out.absolute()
    if out.exists() and not out.is_dir():
        return fail(f"--out {out} is not a directory")
    listener = fleet_acl.Listener(
        port=args.port, bind=args.bind, cafile=args.cafile, certfile=args.certfile, keyfile=args.keyfile
    )
    files = fleet_acl.render(
        accounts, install_dir=args.install_dir or str(out), listener=listener, source=args.inventory.name
    )
    # The password file first, the config that names it last: a broker restarted half-way reads a
    # consistent set more often. Each file is whole or old (write_atomic); all get mkstemp's 0600.
    for name in ("password_file", "acl_file", "mosquitto.conf"):
        write_atomic(out / name, files[name].encode("utf-8"))
    devices = sum(a.kind == "device" for a in accounts)
    print(
        f"{out}: mosquitto.conf, acl_file, password_file ({devices} devices, {len(accounts) - devices} operators)"
    )
    return 0


def _read_bounded(path: Path) -> bytes:
    """At most one byte more than the inventory may have, so a huge file is refused without reading it."""
    with open(path, "rb") as f:
        return f.read(fleet_acl.MAX_INVENTORY_BYTES + 1)
