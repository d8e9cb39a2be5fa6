"""A mosquitto configuration for the central broker that enforces 分权分域, generated from an inventory.

Pure: ``parse_inventory`` turns the bytes of an inventory CSV into entries (or raises ``InventoryError``
listing every located problem) and ``render`` turns entries into the text of the three files of the
broker: ``mosquitto.conf``, ``acl_file`` and ``password_file``. Reading and writing files is
``provisioning.cli``'s job.

The inventory (UTF-8, an optional leading BOM, blank lines skipped)::

    kind,id,province,city,county,township,village,password
    device,kiosk-0001,33,3308,330803,330803100,330803100201,<password>
    operator,county-330803,33,3308,330803,,,<password>

A device has all five region codes; an operator has a prefix of them (at least the province) and sees
and commands everything below it. Every account's username is its id, and the broker replaces the client
id by the username (``use_username_as_clientid``), so nobody can take over another one's session.

Replies to commands go to the requester's reply prefix, which names its region with exactly five slots,
``_`` for the levels below the operator's scope (``reply_prefix``)::

    kiosk/v1/replies/33/3308/330803/_/_/county-330803/...

so a device may publish replies only to operators whose region contains it (five ACL lines with a ``+``
for the operator id, whatever operators exist), and an operator may read only its own prefix.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import unicodedata
from dataclasses import dataclass

from kiosk_core.config import DEVICE_ID, REGION_LEVELS, region_code_problem
from kiosk_core.errors import ConfigError

HEADER = ("kind", "id", *REGION_LEVELS, "password")
KINDS = ("device", "operator")
#: A province of ~40,000 devices is ~4 MB; anything far bigger is a mistake or an attack.
MAX_INVENTORY_BYTES = 8 * 1024 * 1024
MAX_PROBLEMS = 50
PASSWORD_MIN, PASSWORD_MAX = 12, 256
REPLIES = "kiosk/v1/replies"
#: A region slot of a reply prefix below the operator's scope. Never a region code (those are digits).
NO_LEVEL = "_"
# What mosquitto_passwd 2.0 writes by default ("$7$": PBKDF2-HMAC-SHA512, 12-byte salt, 101 rounds).
# The broker runs this once per CONNECT; the file itself is kept 0600.
PBKDF2_ROUNDS = 101
SALT_BYTES = 12

DEVICE_PUBLISH = ("state", "birth", "telemetry", "event", "config/reported")
DEVICE_SUBSCRIBE = ("cmd/+", "config/desired")
OPERATOR_PUBLISH = ("cmd/+", "config/desired")


class InventoryError(ConfigError):
    """The inventory cannot be used; ``problems`` lists every located issue (at most ``MAX_PROBLEMS``).
    A ``ConfigError``: the inventory is the broker's configuration, and callers treat both alike."""

    code = "fleet_acl.inventory"


@dataclass(frozen=True)
class Account:
    """One line of the inventory: a device or an operator with the region codes it covers."""

    kind: str
    id: str
    region: tuple[str, ...]  # 5 codes for a device, 1..5 for an operator
    password: str
    line: int

    @property
    def root(self) -> str:
        """The topic root of a device, or the subtree an operator covers (without ``/#``)."""
        return "/".join(("kiosk/v1", *self.region, *((self.id,) if self.kind == "device" else ())))


def reply_prefix(region: tuple[str, ...], operator_id: str) -> str:
    """``kiosk/v1/replies/{province}/{city|_}/{county|_}/{township|_}/{village|_}/{operator_id}``."""
    slots = tuple(region) + (NO_LEVEL,) * (len(REGION_LEVELS) - len(region))
    return "/".join((REPLIES, *slots, operator_id))


# --- the inventory -------------------------------------------------------------------------------


class _Problems(list[str]):
    def add(self, line: int, message: str, column: int | None = None) -> None:
        where = f"line {line}" if column is None else f"line {line}, column {column} ({HEADER[column - 1]})"
        self.append(f"{where}: {message}")


def parse_inventory(data: bytes, source: str = "<inventory>") -> list[Account]:
    """The accounts of an inventory CSV, or ``InventoryError`` naming the line and column of each problem."""
    problems = _Problems()
    if len(data) > MAX_INVENTORY_BYTES:
        raise InventoryError(
            source,
            [f"more than {MAX_INVENTORY_BYTES:,} bytes: split the fleet into one broker per province"],
        )
    if data.startswith(b"\xef\xbb\xbf"):  # spreadsheets write a UTF-8 byte order mark; it is not data
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InventoryError(
            source, [f"line {line}: not UTF-8 (byte {exc.start}); save the file as UTF-8"]
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    accounts: list[Account] = []
    first_seen: dict[str, int] = {}
    header_seen = False
    line = 1
    while len(problems) < MAX_PROBLEMS:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(reader.line_num, f"not valid CSV: {exc}")
            break
        start, line = line, reader.line_num + 1  # a quoted field may span lines: report where it began
        if not row or row == [""]:
            continue
        if not header_seen:
            header_seen = True
            if tuple(row) != HEADER:
                problems.add(start, f"the header must be {','.join(HEADER)}; found {','.join(row)[:200]!r}")
                break
            continue
        if len(row) != len(HEADER):
            problems.add(start, f"{len(row)} columns, expected {len(HEADER)} ({','.join(HEADER)})")
            continue
        account = _account(row, start, problems)
        if account is None:
            continue
        if account.id in first_seen:
            problems.add(start, f"duplicate id {account.id!r} (first on line {first_seen[account.id]})", 2)
            continue
        first_seen[account.id] = start
        accounts.append(account)
    if not header_seen:
        problems.append(f"line 1: the file is empty; the first line must be {','.join(HEADER)}")
    elif not accounts and not problems:
        problems.append("no devices or operators after the header")
    if problems:
        raise InventoryError(source, problems[:MAX_PROBLEMS])
    return accounts


def _account(row: list[str], line: int, problems: _Problems) -> Account | None:
    before = len(problems)
    kind, ident, *codes, password = row
    if kind not in KINDS:
        problems.add(line, f"kind {kind[:40]!r} must be device or operator", 1)
    if not DEVICE_ID.match(ident):
        problems.add(
            line, f"id {ident[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ - (it is a topic level)", 2
        )
    region = _region(kind, codes, line, problems)
    _check_password(password, line, problems)
    if len(problems) > before:
        return None
    return Account(kind=kind, id=ident, region=region, password=password, line=line)


def _region(kind: str, codes: list[str], line: int, problems: _Problems) -> tuple[str, ...]:
    given = len(codes)
    while given and codes[given - 1] == "":
        given -= 1
    if kind == "device" and given < len(REGION_LEVELS):
        problems.add(line, "a device needs all five region codes", 3 + given)
    elif given == 0:
        problems.add(line, "an operator needs at least its province code (nobody reads all of kiosk/v1/#)", 3)
    parent = ""
    for index in range(given):
        code, column = codes[index], 3 + index
        problem = (
            f"{REGION_LEVELS[index]} code is empty but a lower level is given"
            if code == ""
            else region_code_problem(index, code, parent)
        )
        if problem:
            problems.add(line, problem, column)
        parent = code
    return tuple(codes[:given])


def _check_password(password: str, line: int, problems: _Problems) -> None:
    column = len(HEADER)
    if "\n" in password or "\r" in password:
        problems.add(line, "the password contains a line break", column)
    elif ":" in password:
        problems.add(line, "the password contains ':' (the separator of mosquitto's password file)", column)
    elif any(unicodedata.category(ch) in ("Cc", "Cf") for ch in password):
        problems.add(line, "the password contains a control or invisible character", column)
    elif password != password.strip():
        problems.add(line, "the password starts or ends with white space (a spreadsheet slip?)", column)
    elif not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        problems.add(
            line,
            f"the password has {len(password)} characters, allowed {PASSWORD_MIN}-{PASSWORD_MAX} "
            "(e.g. `openssl rand -base64 18`)",
            column,
        )


# --- the broker's files --------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """The one listener of the generated config; TLS when ``certfile`` and ``keyfile`` are given."""

    port: int = 8883
    bind: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


def hash_password(password: str, salt: bytes | None = None) -> str:
    """mosquitto 2's ``$7$`` hash (what ``mosquitto_passwd -U`` writes): PBKDF2-HMAC-SHA512."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ROUNDS)
    return f"$7${PBKDF2_ROUNDS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_lines(account: Account) -> list[str]:
    """The ``user`` block of one account in mosquitto's acl_file."""
    lines = [f"user {account.id}"]
    if account.kind == "device":
        lines += [f"topic write {account.root}/{channel}" for channel in DEVICE_PUBLISH]
        lines += [f"topic read {account.root}/{channel}" for channel in DEVICE_SUBSCRIBE]
        # Replies to any operator whose region contains this device: province, city, ..., village.
        for depth in range(1, len(REGION_LEVELS) + 1):
            lines.append(f"topic write {reply_prefix(account.region[:depth], '+')}/#")
    else:
        below = "/".join(["+"] * (len(REGION_LEVELS) - len(account.region) + 1))  # levels left + device id
        lines.append(f"topic read {account.root}/#")
        lines += [f"topic write {account.root}/{below}/{channel}" for channel in OPERATOR_PUBLISH]
        lines.append(f"topic read {reply_prefix(account.region, account.id)}/#")
    return lines


def render(
    accounts: list[Account], *, install_dir: str, listener: Listener, source: str = "inventory"
) -> dict[str, str]:
    """The text of ``mosquitto.conf``, ``acl_file`` and ``password_file`` (file name -> content)."""
    devices = sum(a.kind == "device" for a in accounts)
    stamp = f"# Generated by `kiosk fleet acl` from {source}: {devices} devices, {len(accounts) - devices} operators. Do not edit; regenerate.\n"
    acl = [
        stamp,
        "# Every account is a `user` block; nothing is granted to anyone else (no pattern lines).\n",
    ]
    for account in accounts:
        acl.append("\n" + "\n".join(acl_lines(account)) + "\n")
    passwords = "".join(f"{a.id}:{hash_password(a.password)}\n" for a in accounts)
    return {
        "mosquitto.conf": _conf(install_dir, listener, stamp),
        "acl_file": "".join(acl),
        "password_file": passwords,
    }


def _conf(install_dir: str, listener: Listener, stamp: str) -> str:
    bind = f" {listener.bind}" if listener.bind else ""
    lines = [
        stamp.rstrip("\n"),
        "# Security settings are global (one password file and one ACL for every listener).",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {install_dir.rstrip('/')}/password_file",
        f"acl_file {install_dir.rstrip('/')}/acl_file",
        "",
        f"listener {listener.port}{bind}",
        "# Per listener, so it must follow its listener line (before any listener it would open a default",
        "# listener on port 1883): the client id is the authenticated username, so a client cannot take",
        "# over (and knock off) another account's session by choosing its client id.",
        "use_username_as_clientid true",
    ]
    if listener.cafile:
        lines.append(f"cafile {listener.cafile}")
    if listener.certfile and listener.keyfile:
        lines += [f"certfile {listener.certfile}", f"keyfile {listener.keyfile}", "tls_version tlsv1.2"]
    return "\n".join(lines) + "\n"
