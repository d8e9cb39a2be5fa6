"""Who the kiosk is: its device id, name, role, region (five codes, checked against a table of the
administrative divisions) and the platform broker it reports to.

Pure checks, shared by the wizard and the flags of ``kiosk provision``: every problem is collected and
raised together as a ``ProvisioningError`` so a technician fixes them in one go.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kiosk_core.config import DEVICE_ID, REGION_DIGITS, REGION_LEVELS, region_code_problem
from provisioning.errors import ProvisioningError

ROLES = ("main", "backup")
# A DNS name or an IPv4 address (IPv6 goes in brackets: [fd00::1]:8883).
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
IPV6 = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
LEVEL_NAMES_ZH = {"province": "省", "city": "市", "county": "区县", "township": "乡镇", "village": "村"}


@dataclass(frozen=True, slots=True)
class Broker:
    """The platform's MQTT broker as ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_broker(text: str) -> Broker:
    """``host:port`` (``[v6addr]:port`` for IPv6), port 1-65535. Raises ``ProvisioningError``."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        ok_host = bool(IPV6.match(host)) and ":" in host
    else:
        host, sep, port_text = value.rpartition(":")
        ok_host = bool(HOSTNAME.match(host))
    if not sep or not host:
        raise ProvisioningError(
            f"broker {value[:80]!r} must be host:port (for example mqtt.county.example:8883)"
        )
    if not ok_host:
        raise ProvisioningError(f"broker host {host[:80]!r} is not a host name or an IP address")
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ProvisioningError(
            f"broker port {port_text[:20]!r} must be a number 1-65535 (8883 for MQTT over TLS)"
        )
    return Broker(host, int(port_text))


class RegionTable:
    """Code -> name of the administrative divisions (``provisioning/regions.json`` unless a file is
    given). A code's parent is the code of the level above, which it starts with."""

    def __init__(self, names: dict[str, str], source: str) -> None:
        self.names = names
        self.source = source

    @classmethod
    def load(cls, path: Path | None = None) -> RegionTable:
        if path is None:
            text = resources.files("provisioning").joinpath("regions.json").read_text(encoding="utf-8")
            source = "provisioning/regions.json"
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ProvisioningError(f"cannot read the region table {path}: {exc}") from None
            source = str(path)
        try:
            data = json.loads(text)
            names = data["regions"]
            if not isinstance(names, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in names.items()
            ):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ProvisioningError(
                f'{source}: not a region table (want {{"regions": {{"33": "浙江省", ...}}}})'
            ) from None
        return cls(names, source)

    def name(self, code: str) -> str | None:
        return self.names.get(code)

    def children(self, parent: str) -> list[tuple[str, str]]:
        """The known divisions one level below ``parent`` (``""``: the provinces), sorted by code."""
        level = REGION_DIGITS.index(len(parent)) + 1 if parent else 0
        if level >= len(REGION_DIGITS):
            return []
        digits = REGION_DIGITS[level]
        return sorted((c, n) for c, n in self.names.items() if len(c) == digits and c.startswith(parent))

    def check(self, codes: list[str] | tuple[str, ...]) -> tuple[str, str, str, str, str]:
        """The five codes, each a known child of the one before; raises naming every problem."""
        codes = [c.strip() for c in codes]
        if len(codes) != len(REGION_LEVELS):
            raise ProvisioningError(
                f"region needs {len(REGION_LEVELS)} codes (province,city,county,township,village), "
                f"got {len(codes)}: {','.join(codes)[:120]!r}"
            )
        problems = []
        parent = ""
        for index, code in enumerate(codes):
            level = REGION_LEVELS[index]
            problem = region_code_problem(index, code, parent)
            if problem is None and code not in self.names:
                known = ", ".join(f"{c} {n}" for c, n in self.children(parent)[:6]) or "none"
                under = f" under {parent} {self.names.get(parent, '')}".rstrip() if parent else ""
                problem = f"{level} code {code} is not in {self.source}{under} (known: {known})"
            if problem is not None:
                problems.append(problem)
                break  # the levels below a wrong code cannot be judged
            parent = code
        if problems:
            raise ProvisioningError(problems)
        return tuple(codes)  # type: ignore[return-value]

    def describe(self, codes: tuple[str, ...] | list[str]) -> str:
        """``浙江省 33 / 衢州市 3308 / ...`` (``?`` for an unknown name)."""
        return " / ".join(f"{self.names.get(c, '?')} {c}" for c in codes)


@dataclass(frozen=True, slots=True)
class Identity:
    device_id: str
    name: str
    region: tuple[str, str, str, str, str]
    role: str
    broker: Broker


def check_identity(
    *,
    device_id: str,
    name: str,
    region: list[str] | tuple[str, ...] | str,
    role: str,
    broker: str,
    regions: RegionTable,
) -> Identity:
    """Every field checked; raises one ``ProvisioningError`` listing all problems."""
    problems: list[str] = []
    device_id = device_id.strip()
    if not DEVICE_ID.match(device_id):
        problems.append(
            f"device id {device_id[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ - (it is part of MQTT topics)"
        )
    name = name.strip()
    if not 1 <= len(name) <= 128:
        problems.append("name must be 1-128 characters (the service room's name, e.g. 赤柯山村便民服务站)")
    if role not in ROLES:
        problems.append(f"role {role[:20]!r} must be main or backup")
    codes = region.split(",") if isinstance(region, str) else list(region)
    checked_region: tuple[str, str, str, str, str] | None = None
    try:
        checked_region = regions.check(codes)
    except ProvisioningError as exc:
        problems.extend(exc.problems)
    parsed_broker: Broker | None = None
    try:
        parsed_broker = parse_broker(broker)
    except ProvisioningError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ProvisioningError(problems)
    assert checked_region is not None and parsed_broker is not None
    return Identity(device_id, name, checked_region, role, parsed_broker)
