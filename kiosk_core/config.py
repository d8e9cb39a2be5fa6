"""Typed configuration shared by every process: the strict base model, the sections every process
reads (device, bus, storage, logging) and the loader with located errors.

Load order: ``--config PATH`` > ``$KIOSK_CONFIG`` > ``/etc/kiosk/kiosk.toml``. Each process validates
the sections it uses against its own model (the appliance, which owns the file, validates all of it).
Every problem is reported as ``<file>: <dotted.key> = <bad value>: <what is allowed>`` so a technician
can fix a typo without reading code.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kiosk_core.errors import ConfigError

DEFAULT_PATH = Path("/etc/kiosk/kiosk.toml")
MAX_CONFIG_BYTES = 1 << 20

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Unknown keys are errors, values are immutable once loaded, strings are stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Region codes per level of the five-level hierarchy (GB/T 2260 + township/village statistical codes).
REGION_DIGITS = (2, 4, 6, 9, 12)
REGION_LEVELS = ("province", "city", "county", "township", "village")


class DeviceConfig(Strict):
    id: str = Field(description="[A-Za-z0-9_-], 1-64 characters, unique in the fleet")
    name: str = Field(min_length=1, max_length=128)
    role: Literal["main", "backup"] = "main"
    region: tuple[str, str, str, str, str] = Field(
        description="province, city, county, township, village codes (2, 4, 6, 9, 12 digits), each "
        "starting with its parent's code"
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not DEVICE_ID.match(v):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ - (it is part of MQTT topics)")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for index, (code, parent) in enumerate(zip(v, ("",) + tuple(v), strict=False)):
            problem = region_code_problem(index, code, parent)
            if problem:
                raise ValueError(problem)
        return v


def region_code_problem(index: int, code: str, parent: str) -> str | None:
    """What is wrong with the region code of level ``index`` (0 = province) under ``parent``, if anything."""
    level, digits = REGION_LEVELS[index], REGION_DIGITS[index]
    if not (code.isascii() and code.isdigit() and len(code) == digits):
        return f"{level} code {code[:40]!r} must be {digits} digits"
    if not code.startswith(parent):
        return f"{level} code {code!r} must start with its parent's code {parent!r}"
    return None


class BusConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)


class StorageConfig(Strict):
    data_dir: Path = Path("/var/lib/kiosk")
    outbox_quota_mb: float = Field(256.0, gt=0, description="disk budget of the outbox before drop policy")
    command_retention_days: float = Field(7.0, ge=7.0, description="how long command ids are remembered")
    reserve_mb: float = Field(
        4.0, ge=0, le=1024, description="space kept free for the outbox, released when the disk fills up"
    )


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tail_lines: int = Field(2000, ge=10, le=100_000, description="lines kept for collect_logs")


class SharedConfig(Strict):
    """The sections every process reads. Other top-level tables belong to other processes (the
    appliance validates them); inside these sections unknown keys are still errors."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    device: DeviceConfig
    bus: BusConfig = BusConfig()
    storage: StorageConfig = StorageConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def topic_root(self) -> str:
        return topic_root(self.device)


def topic_root(device: DeviceConfig) -> str:
    """``kiosk/v1/{province}/{city}/{county}/{township}/{village}/{device_id}``."""
    return "kiosk/v1/" + "/".join(device.region) + "/" + device.id


# --- loading -------------------------------------------------------------------------------------


def resolve_path(cli_path: str | os.PathLike[str] | None = None) -> Path:
    if cli_path:
        return Path(cli_path)
    env = os.environ.get("KIOSK_CONFIG")
    return Path(env) if env else DEFAULT_PATH


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def allowed_keys(loc: tuple[Any, ...], model: type[BaseModel] | None) -> list[str]:
    """The keys the table holding ``loc`` accepts (walks the models; dict levels are skipped)."""
    for part in loc[:-1]:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            continue  # a free-form name such as a camera's, or a union branch tag
        model = _model_in(field.annotation)
    return sorted(model.model_fields) if model is not None else []


def describe_errors(source: str, exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _fmt_loc(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = allowed_keys(tuple(err["loc"]), model)
            hint = f"allowed here: {', '.join(allowed)}" if allowed else "see docs/kiosk.example.toml"
            problems.append(f"{loc}: unknown key (check the spelling; {hint})")
        elif err["type"] == "missing":
            problems.append(f"{loc}: required key is missing")
        else:
            problems.append(f"{loc} = {_shorten(err.get('input'))}: {err['msg']}")
    return ConfigError(source, problems)


def parse(model: type[M], data: dict[str, Any], source: str = "<config>") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(source, exc, model) from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found (use --config PATH or KIOSK_CONFIG)"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [f"file is {len(raw)} bytes; at most {MAX_CONFIG_BYTES} are accepted"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"byte {exc.start}: not UTF-8 text"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax: {exc}"]) from None


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` onto ``base`` (tables merge, everything else replaces)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(
    model: type[M], path: str | os.PathLike[str] | None = None, overlay: dict[str, Any] | None = None
) -> M:
    """Read, merge the optional overlay, validate. Raises ``ConfigError`` listing every problem."""
    p = resolve_path(path)
    data = read_toml(p)
    if overlay:
        data = merge(data, overlay)
    return parse(model, data, str(p))


SECRET_KEYS = ("password", "key", "secret", "token", "pin")


def redacted(cfg: BaseModel) -> dict[str, Any]:
    """The effective config as plain data with secrets replaced by ``"***"``."""

    def walk(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        if v is not None and any(s in key.lower() for s in SECRET_KEYS):
            return "***"
        if isinstance(v, Path):
            return str(v)
        return v

    return walk(cfg.model_dump(mode="python"))
