"""The fleet contract's messages as pydantic models: what the device publishes and receives under
``kiosk/v1/{province}/{city}/{county}/{township}/{village}/{device_id}/`` (docs/mqtt.md).

The daemon puts ``state``, ``birth``, ``telemetry`` and ``config/reported`` on the wire through these
models (``conform``), so a field the code adds or drops without the model is logged at once. The same models
render ``docs/schema/fleet.schema.json`` (``fleet_schema``; ``python -m sim.schema_doc --write``), and
the test suite validates every message it sees against that document.

``extra=`` says what the device really sends: its own messages are closed (``forbid``). Event ``data``
is open except for the types the appliance and its drivers emit themselves (``EVENT_DATA``): producers
on the local bus (the UI, kiosk-media) hand over events the appliance stores as they are. A command
reply is ``status`` + ``name`` + ``id`` + the handler's body: open, except the built-in commands'
(``COMMAND_REPLIES``). No model holds a NaN or an infinity (``allow_inf_nan=False``): JSON has none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.json_schema import models_json_schema

from kiosk_core.commands import CommandSpec

log = logging.getLogger("kiosk.messages")

SCHEMA_ID = "https://village-kiosk.example/schema/fleet.schema.json"
SEQ_MAX = 2**63 - 1  # SQLite's INTEGER: seq is a signed 64-bit number
MAX_VERSION = 2**53 - 1  # config versions: the integers every JSON implementation reads exactly


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent(**kw: Any) -> Any:
    """A key the device leaves out when it has nothing to say (never sends as null)."""
    return Field(None, json_schema_extra=_no_default, **kw)


Epoch = Field(ge=0, le=SEQ_MAX, description="the connection epoch (never goes back)")
Wall = Field(ge=0, description="UNIX seconds, millisecond resolution")


class WireModel(BaseModel):
    """A closed message: unknown keys are errors, numbers are finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The JSON object to publish (``kiosk_core.payload.dumps`` it); fields never set stay out."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


M = TypeVar("M", bound=WireModel)


def conform(model: type[M], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as ``model`` puts it on the wire. Data that does not fit is logged and sent as it is:
    a kiosk that cannot describe itself exactly must still come online and report (the test suite
    validates every message it sees, so a misfit fails there, not in the field)."""
    try:
        return model.model_validate(data).wire()
    except ValidationError as exc:
        log.error("%s does not fit the fleet schema (sent as it is): %s", model.__name__, exc)
        return dict(data)


class OpenModel(WireModel):
    """Known fields checked, further keys allowed (a producer's or a handler's own)."""

    model_config = ConfigDict(extra="allow")


# --- state -----------------------------------------------------------------------------------------


class State(WireModel):
    """``state`` (retained): presence. ``lost`` is the Will of the connection ``epoch`` names."""

    state: Literal["online", "offline", "lost"]
    epoch: int = Field(ge=1, le=SEQ_MAX, description="a consumer ignores a lower epoch than it has seen")
    ts: float = Wall
    boot_id: str = Field(min_length=1, max_length=64)


# --- birth -----------------------------------------------------------------------------------------


class HealthItem(WireModel):
    status: Literal["ok", "degraded", "missing"]
    reason: str
    since: float = Wall


class BirthDevice(WireModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str
    role: Literal["main", "backup"]
    region: list[str] = Field(min_length=5, max_length=5, description="province .. village codes")


class InventoryItem(OpenModel):
    """One configured part: a driver (kind, model, backend, health, and facts of its kind: a reader's
    port and SAM id, a switcher's size, the GPIO pins), a camera of kiosk-media (also its role), or
    the service session (its catalog version)."""

    name: str
    kind: str
    model: str = absent()
    backend: str = absent()
    role: str = absent()
    health: HealthItem = absent()
    catalog_version: int = absent(ge=0)


class SlotInfo(WireModel):
    """One A/B slot as RAUC reports it."""

    version: str | None = Field(description="the version of the bundle last installed there; null: none")
    state: Literal["good", "bad"] = Field(description="the boot chooser's verdict (RAUC's boot-status)")
    booted: bool


class OtaInfo(WireModel):
    """``birth.ota``: firmware updates (docs/ota.md)."""

    updates: Literal["available", "unavailable"]
    reason: str = absent(description="why updates are unavailable (no RAUC on the system bus, ...)")
    booted_slot: str = absent(description="the bootname of the running slot (A or B)")
    primary: str = absent(description="the bootname of the slot the next boot runs")
    compatible: str = absent()
    trial: bool = absent(description="the booted slot is new and not yet marked good (health checks run)")
    slots: dict[str, SlotInfo] = absent(description="by bootname")


class FailoverInfo(WireModel):
    """``birth.failover``: the live role of a terminal of a main/backup pair (``device.role`` is the
    configured one); absent without ``[failover]``."""

    role: Literal["active", "standby"]
    lease_epoch: int = Field(ge=0, le=SEQ_MAX, description="the room's role epoch this terminal last took")


class Birth(WireModel):
    """``birth`` (retained): who and what the device is."""

    epoch: int = Field(ge=1, le=SEQ_MAX)
    boot_id: str = Field(min_length=1, max_length=64)
    firmware: str
    device: BirthDevice
    drivers: list[InventoryItem]
    capabilities: list[str]
    commands: list[str]
    config_version: int = Field(ge=0, le=MAX_VERSION)
    time_synced: bool
    telemetry_interval_s: float = Field(
        ge=1,
        le=86400,
        description="how often telemetry is sent; a consumer counts the device lost when nothing came "
        "from it for 3 times this plus 30 s (docs/mqtt.md, consumer rules)",
    )
    ota: OtaInfo = absent(description="the A/B slots and whether firmware updates can run")
    failover: FailoverInfo = absent(description="the live failover role (a main/backup pair only)")
    ts: float = Wall


# --- telemetry -------------------------------------------------------------------------------------


class Clock(WireModel):
    wall: float = Wall
    mono: float = Field(ge=0)
    time_synced: bool


class Memory(WireModel):
    total_bytes: int = Field(ge=0)
    available_bytes: int = Field(ge=0)


class Disk(WireModel):
    free_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)


class StorageState(WireModel):
    """The filesystem under ``data_dir``: also the data of ``storage.full`` / ``storage.recovered``."""

    full: bool
    free_bytes: int = Field(ge=0)
    data_dir: str


class OutboxStats(WireModel):
    depth: int = Field(ge=0)
    oldest_age_s: float | None
    bytes: int = Field(ge=0)
    quota_bytes: int = Field(ge=0)
    telemetry_stored: int = Field(ge=0)


class Dropped(WireModel):
    events: int = Field(ge=0)
    telemetry: int = Field(ge=0)
    local_rejected: int = Field(ge=0)


class CommandCounts(WireModel):
    received: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    expired: int = Field(ge=0)
    malformed: int = Field(ge=0)
    unknown: int = Field(ge=0)
    failed: int = Field(ge=0)
    refused: int = Field(ge=0)


class Telemetry(WireModel):
    """``telemetry``: periodic health. A measurement that came out non-finite is null."""

    ts: Clock
    epoch: int = Epoch
    cpu_percent: float | None
    load: list[float | None] = Field(max_length=3, description="1, 5, 15 minute load; empty if unknown")
    memory: Memory
    rss_bytes: int = Field(ge=0)
    disk: Disk
    storage: StorageState
    soc_temp_c: float | None
    uptime_s: float | None
    appliance_uptime_s: float = Field(ge=0)
    outbox: OutboxStats
    dropped: Dropped
    commands: CommandCounts
    peripherals: dict[str, HealthItem]
    subsystems: dict[str, dict[str, Any]] = absent(
        description="each subsystem's own figures (peripherals, media, session); absent when none"
    )


# --- event -----------------------------------------------------------------------------------------


class EventClock(WireModel):
    wall: float = Wall
    mono: float = Field(ge=0, description="the monotonic clock of boot_id")
    boot_id: str = Field(min_length=1, max_length=64, description="the boot that stored the event")
    time_synced: bool


class Event(WireModel):
    """``event``: durable. De-duplicate by (device_id, seq); the data of a known type is checked."""

    epoch: int = Epoch
    seq: int = Field(ge=1, le=SEQ_MAX, description="64-bit, never reused, in order")
    ts: EventClock
    type: str = Field(min_length=1)
    data: dict[str, Any]


class DeviceStarted(WireModel):
    firmware: str
    boot_id: str
    role: Literal["main", "backup"]
    config_version: int = Field(ge=0, le=MAX_VERSION)


class DeviceStopping(WireModel):
    reason: str


class RebootRequested(WireModel):
    delay_s: float = Field(ge=0, le=300)
    reason: str = absent(
        description="why the device reboots by itself (a firmware update); absent for the reboot command"
    )


SHA256 = Field(pattern=r"^[0-9a-f]{64}$")


class FirmwareDownload(WireModel):
    """The bundle is on the device and matches the sha256 the platform gave."""

    url: str = Field(description="without user-info and query")
    bytes: int = Field(ge=0)
    sha256: str = SHA256
    resumed_from: int = Field(ge=0, description="bytes already on the device from an earlier attempt")


class FirmwareProgress(WireModel):
    percent: int = Field(ge=0, le=100)
    message: str


class FirmwareInstalled(WireModel):
    slot: str = Field(description="the bootname of the slot written (the next boot runs it)")
    version: str


class FirmwareFailed(WireModel):
    stage: Literal["download", "verify", "install", "health"]
    reason: str
    version: str = absent(description="the version that failed, when known")


class FirmwareCommitted(WireModel):
    """The new slot passed its health checks and is marked good."""

    slot: str
    version: str
    previous_version: str | None


class FirmwareRolledBack(WireModel):
    """The kiosk runs the old slot again: the new one failed its health checks or did not boot."""

    from_version: str | None = Field(description="the version that failed")
    to_version: str | None = Field(description="the version running now")
    slot: str = Field(description="the bootname running now")
    reason: str


class CommandCompleted(OpenModel):
    """The outcome of a command answered 202: its result body or its error, as a reply would carry."""

    id: str | None
    name: str
    status: int = Field(ge=200, le=599)


class ConfigApplied(WireModel):
    version: int = Field(ge=1, le=MAX_VERSION)
    changed: list[str]
    restart_required: list[str]


class ConfigRejected(WireModel):
    version: int = Field(ge=1, le=MAX_VERSION)
    reason: Literal["locked", "invalid"]
    keys: list[str] = absent()
    errors: list[str] = Field(max_length=20)


class ConfigReloaded(WireModel):
    source: Literal["file"]
    restart_required: list[str]


class BusEventRejected(WireModel):
    reason: str = Field(max_length=300)
    bytes: int = Field(ge=0)


class EarlierGaps(WireModel):
    telemetry: int = Field(ge=0)
    event: int = Field(ge=0)


class Gap(WireModel):
    """What the drop policy dropped; the surviving gap events' totals equal everything dropped."""

    kind: Literal["event", "telemetry"]
    from_seq: int = absent(ge=1, le=SEQ_MAX)
    to_seq: int = absent(ge=1, le=SEQ_MAX)
    count: int = Field(ge=1)
    reason: Literal["outbox quota", "disk full"]
    ranges: list[tuple[int, int]] = absent(
        max_length=64,
        description="every seq range [first, last] this gap and the gaps folded into it account for: "
        "sorted, disjoint (kind event only)",
    )
    earlier_gaps: EarlierGaps = absent()
    telemetry_dropped: int = Field(ge=0)
    events_dropped: int = Field(ge=0)


class Validity(WireModel):
    from_: str | None = Field(alias="from")
    to: str | None


class CardRead(WireModel):
    """A card on the reader: its kind and masked number only (no name, address, birth date)."""

    card_type: str
    card_title: str
    id_number_masked: str | None
    pass_number_masked: str = absent()
    validity: Validity
    valid: bool
    problems: list[str]
    photo: str
    reader: str
    read_ms: int = Field(ge=0)
    attempts: int = Field(ge=1)


class CardInserted(WireModel):
    reader: str


class CardRemoved(WireModel):
    reader: str
    reason: Literal["removed", "reader_lost"]


class CardError(WireModel):
    reader: str
    code: str
    message: str
    attempts: int = Field(ge=1)


class SwitcherRouted(WireModel):
    input: int = Field(ge=0)
    output: int = Field(ge=0)
    video: bool
    audio: bool
    attempts: int = Field(ge=1)


class SwitcherFailed(WireModel):
    input: int = Field(ge=0)
    output: int = Field(ge=0)
    layer: str
    code: str
    error: str
    attempts: int = Field(ge=0)


class PrinterPrinted(WireModel):
    """``printer.printed``: a receipt came out of the printer (its contents never leave the kiosk)."""

    printer: str
    job: Literal["receipt", "appointment"]
    session_id: str | None
    bytes: int = Field(ge=0)


class PrinterFailed(WireModel):
    """``printer.failed``: a receipt did not come out: no paper, cover open, offline, gone."""

    printer: str
    job: Literal["receipt", "appointment"]
    session_id: str | None
    code: str = Field(
        description="printer.no_paper | printer.cover_open | printer.offline | printer.missing | printer.fault | printer.status | printer.receipt"
    )
    error: str


class HelpPressed(WireModel):
    meaning: str
    duration_s: float = Field(ge=0)


class HelpHeld(WireModel):
    meaning: str
    hold_time_s: float = Field(ge=0)


class PresenceDetected(WireModel):
    screen_woken: bool
    relay: str | None


class PresenceCleared(WireModel):
    present_s: float | None


class CallCounters(WireModel):
    video_frames: int = Field(ge=0)
    audio_ms: int = Field(ge=0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)


class CallSent(WireModel):
    tracks: list[Literal["room", "doccam", "mic"]]
    bitrate_kbps: int = Field(ge=0)


class CallChanged(WireModel):
    """``call.connected``, ``call.reconnecting``, ``call.reconnected``, ``call.audio_only``,
    ``call.failed`` (from kiosk-media): the call's media with the clerk changed state."""

    session_id: str
    reason: str | None = Field(description="what went wrong (technical English); null when all is well")
    setup_ms: int = absent(ge=0, description="call.connected: accepted -> media flowing")
    reconnects: int = absent(ge=0, description="call.reconnected: reconnections so far in this call")


class CallEnded(WireModel):
    session_id: str
    reason: str
    duration_s: float = Field(ge=0)
    reconnects: int = Field(ge=0)
    rx: CallCounters
    tx: CallSent


class VillagerReply(WireModel):
    """``session.villager_reply``: during the call the villager answered the clerk with a fixed reply
    (the call screen's "回复工作人员"); the kiosk also shows it as the villager's line in the messages."""

    session_id: str
    code: Literal["cant_hear", "dont_understand", "wait", "need_official"] = Field(
        description="cant_hear 听不清, dont_understand 看不懂, wait 请稍等, need_official 请村干部帮忙"
    )


class FailoverRole(WireModel):
    """``failover.role``: this terminal became active or standby (docs/failover.md)."""

    role: Literal["active", "standby"]
    lease_epoch: int = Field(ge=0, le=SEQ_MAX)
    reason: Literal["lease_granted", "lease_lost", "peer_failed", "switch", "prefer", "restart"]


CALL_EVENTS = ("call.connected", "call.reconnecting", "call.reconnected", "call.audio_only", "call.failed")

# The data of every event type the appliance and its drivers emit. Other types (the session's funnel,
# kiosk-media's other events, the UI's, any local producer's) carry an open JSON object.
EVENT_DATA: dict[str, type[BaseModel]] = {
    "device.started": DeviceStarted,
    "device.stopping": DeviceStopping,
    "device.reboot_requested": RebootRequested,
    "firmware.download": FirmwareDownload,
    "firmware.progress": FirmwareProgress,
    "firmware.installed": FirmwareInstalled,
    "firmware.failed": FirmwareFailed,
    "firmware.committed": FirmwareCommitted,
    "firmware.rolled_back": FirmwareRolledBack,
    "command.completed": CommandCompleted,
    "config.applied": ConfigApplied,
    "config.rejected": ConfigRejected,
    "config.reloaded": ConfigReloaded,
    "bus.event_rejected": BusEventRejected,
    "gap": Gap,
    "storage.full": StorageState,
    "storage.recovered": StorageState,
    "card.read": CardRead,
    "card.inserted": CardInserted,
    "card.removed": CardRemoved,
    "card.error": CardError,
    "switcher.routed": SwitcherRouted,
    "switcher.failed": SwitcherFailed,
    "printer.printed": PrinterPrinted,
    "printer.failed": PrinterFailed,
    "button.help.pressed": HelpPressed,
    "button.help.held": HelpHeld,
    "presence.detected": PresenceDetected,
    "presence.cleared": PresenceCleared,
    **dict.fromkeys(CALL_EVENTS, CallChanged),
    "call.ended": CallEnded,
    "session.villager_reply": VillagerReply,
    "failover.role": FailoverRole,
}


# --- config ----------------------------------------------------------------------------------------


class ConfigDesired(WireModel):
    """``config/desired`` (retained, from the platform): an overlay of the device's TOML tables."""

    version: int = Field(ge=1, le=MAX_VERSION)
    config: dict[str, Any]


class ConfigReported(WireModel):
    """``config/reported`` (retained): the result of the newest desired version seen."""

    version: int | None = Field(ge=1, le=MAX_VERSION, description="null when the document was malformed")
    result: Literal["applied", "pending_restart", "rejected", "failed"]
    reason: Literal["malformed", "locked", "invalid"] = absent(description="when rejected")
    keys: list[str] = absent(description="the locked keys a rejected document sets")
    errors: list[str]
    changed: list[str] = absent()
    restart_required: list[str] = absent()
    running_version: int = absent(ge=0, le=MAX_VERSION, description="when rejected or failed")
    ts: float = Wall


# --- commands --------------------------------------------------------------------------------------


class CommandEnvelope(BaseModel):
    """What every request body may carry besides the command's parameters."""

    id: str | None = Field(None, min_length=1, max_length=128, description="run at most once per id")
    expires_at: float | str | None = Field(
        None, description="UNIX seconds or ISO 8601 with a time zone; later arrivals are answered 410"
    )


class Reply(OpenModel):
    """A 2xx reply (to the request's Response Topic, with its Correlation Data): the handler's body."""

    status: Literal[200, 202]
    name: str
    id: str = absent(description="the command id (or corr:<Correlation Data>), when there is one")


class ErrorReply(OpenModel):
    """Any status but 2xx: ``error`` says what; more keys name the detail (``field``, ``commands``...)."""

    # 502: a local service (kiosk-media) answered something that is not a reply.
    status: Literal[400, 404, 409, 410, 500, 502, 503, 504]
    error: str
    name: str
    id: str = absent()


class PingReply(WireModel):
    status: Literal[200]
    pong: Literal[True]
    epoch: int = Epoch
    ts: float = Wall
    name: Literal["ping"]
    id: str = absent()


class OutboxSummary(WireModel):
    depth: int = Field(ge=0)
    oldest_age_s: float | None


class StatusReply(WireModel):
    status: Literal[200]
    health: dict[str, HealthItem]
    uptime_s: float = Field(ge=0)
    outbox: OutboxSummary
    config_version: int = Field(ge=0, le=MAX_VERSION)
    epoch: int = Epoch
    firmware: str
    name: Literal["get_status"]
    id: str = absent()


class FailoverPeer(WireModel):
    device_id: str | None = Field(description="the other terminal's device id (null: never heard)")
    healthy: bool


class ArbiterState(WireModel):
    online: bool


class FailoverStatusReply(OpenModel):
    """``failover.status``: the fields the issue names, and the terminal's own details beside them."""

    status: Literal[200]
    role: Literal["active", "standby"]
    lease_epoch: int = Field(ge=0, le=SEQ_MAX)
    peer: FailoverPeer
    arbiter: ArbiterState
    name: Literal["failover.status"]
    id: str = absent()


class RebirthReply(WireModel):
    status: Literal[200]
    epoch: int = Epoch
    name: Literal["rebirth"]
    id: str = absent()


class LogLevelReply(WireModel):
    status: Literal[200]
    logger: str
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    name: Literal["set_log_level"]
    id: str = absent()


class CollectLogsReply(WireModel):
    status: Literal[200]
    lines: list[str]
    truncated: bool
    name: Literal["collect_logs"]
    id: str = absent()


class RebootReply(WireModel):
    status: Literal[202]
    rebooting_in_s: float = Field(ge=0, le=300)
    name: Literal["reboot"]
    id: str = absent()


# The 2xx replies of the built-in commands; every other command's 2xx reply is a ``Reply``. A repeated
# id may also get "already running" (202, ``detail``), which every command's reply admits.
COMMAND_REPLIES: dict[str, type[BaseModel]] = {
    "ping": PingReply,
    "get_status": StatusReply,
    "rebirth": RebirthReply,
    "set_log_level": LogLevelReply,
    "collect_logs": CollectLogsReply,
    "reboot": RebootReply,
    "failover.status": FailoverStatusReply,
}


class AlreadyRunning(WireModel):
    status: Literal[202]
    detail: Literal["already running"]
    name: str
    id: str


def request_model(spec: CommandSpec) -> type[BaseModel]:
    """The request body of ``cmd/{spec.name}``: its parameters plus ``id`` and ``expires_at``."""
    envelope = {n: (f.annotation, f) for n, f in CommandEnvelope.model_fields.items()}
    return create_model("Cmd_" + spec.name.replace(".", "_"), __base__=spec.params, **envelope)  # type: ignore[call-overload]


# --- the document ----------------------------------------------------------------------------------

# Channel (below the device root) -> the model of its payload, for the device's own channels.
CHANNELS: dict[str, type[BaseModel]] = {
    "state": State,
    "birth": Birth,
    "telemetry": Telemetry,
    "event": Event,
    "config/desired": ConfigDesired,
    "config/reported": ConfigReported,
}


def _def(name: str) -> str:
    return f"#/$defs/{name}"


def fleet_schema(specs: Iterable[CommandSpec]) -> dict[str, Any]:
    """One JSON Schema 2020-12 document: ``$defs`` per message and ``x-channels``, each channel (below
    the device root; ``cmd/{name}`` per command, ``reply/{name}`` for its reply, ``reply`` for any
    reply) -> its ``$ref``."""
    specs = sorted(specs, key=lambda s: s.name)
    requests = {spec.name: request_model(spec) for spec in specs}
    models: list[type[BaseModel]] = [
        *CHANNELS.values(),
        *dict.fromkeys(EVENT_DATA.values()),
        *requests.values(),
        Reply,
        ErrorReply,
        AlreadyRunning,
        *COMMAND_REPLIES.values(),
    ]
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template="#/$defs/{model}")
    defs: dict[str, Any] = dict(top.get("$defs", {}))

    def ref(model: type[BaseModel]) -> str:
        return refs[(model, "validation")]["$ref"]

    event = defs[ref(Event).rsplit("/", 1)[1]]
    event["allOf"] = [
        {
            "if": {"properties": {"type": {"const": etype}}, "required": ["type"]},
            "then": {"properties": {"data": {"$ref": ref(model)}}},
        }
        for etype, model in sorted(EVENT_DATA.items())
    ]
    channels: dict[str, str] = {name: ref(model) for name, model in CHANNELS.items()}
    defs["reply"] = {
        "title": "a reply to any command (also an unknown one: 404)",
        "anyOf": [{"$ref": ref(Reply)}, {"$ref": ref(ErrorReply)}, {"$ref": ref(AlreadyRunning)}],
    }
    channels["reply"] = _def("reply")
    for spec in specs:
        reply_name = f"reply.{spec.name}"
        ok = COMMAND_REPLIES.get(spec.name, Reply)
        defs[reply_name] = {
            "title": f"reply to {spec.name}",
            "anyOf": [{"$ref": ref(ok)}, {"$ref": ref(ErrorReply)}, {"$ref": ref(AlreadyRunning)}],
        }
        channels[f"cmd/{spec.name}"] = ref(requests[spec.name])
        channels[f"reply/{spec.name}"] = _def(reply_name)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "village-kiosk fleet contract (docs/mqtt.md)",
        "description": "Generated from appliance/messages.py and the firmware's CommandSpecs by "
        "`python -m sim.schema_doc --write`; do not edit.",
        "x-channels": channels,
        "$defs": dict(sorted(defs.items())),
    }
