"""``technician``: device status, peripheral health, network, media, and a test button per peripheral.

The session state's ``view`` carries device, peripherals, network, clock and test results; the retained
``kiosk/local/state/peripherals`` and ``kiosk/local/state/media`` (when published) add detail: the media
process's ``recording``, ``disk``, ``uplink`` and ``audio``. A peripheral's health reason comes from its
driver in technical English; the screen says it in the technician's language with the port and what to
check (``reason_text``), the original kept after it. The "test finished" notice is worded here (device
and result in words) and goes away once the test is ``NOTICE_STALE_S`` old.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.i18n import Catalog
from kiosk_ui.screens.base import Entity, KioskScreen, View, as_dict, as_list, freeze
from kiosk_ui.widgets.plain import Plain

HEALTH_MARK = {"ok": "●", "degraded": "▲", "missing": "✖"}
# Parts of the appliance in its health map that are not devices a technician can plug in or test.
NOT_PERIPHERALS = frozenset({"session", "fleet", "bus", "local_bus", "outbox", "ota", "media"})
# A test result older than this no longer says anything about the device now.
NOTICE_STALE_S = 30.0
NOTICE_CHECK_S = 1.0
# Driver reasons the catalog has words for: (pattern, catalog key); the match's groups are placeholders.
REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bno (?P<port>/dev/\S+)", re.I), "tech.reason.no_port"),
    (
        re.compile(r"(?P<port>/dev/\S+).*(?:timeout|timed out|no answer|not responding)", re.I),
        "tech.reason.silent",
    ),
    (re.compile(r"timeout|timed out|no answer|not responding", re.I), "tech.reason.silent_noport"),
    (re.compile(r"flapping", re.I), "tech.reason.flapping"),
    (re.compile(r"permission denied", re.I), "tech.reason.permission"),
)


def peripheral_rows(view: View) -> list[dict[str, Any]]:
    """Peripherals by name: the session view's list, completed by the retained peripherals state.

    The retained state may be ``{"peripherals": [inventory...]}`` or ``{name: inventory}``; an
    inventory's ``health`` may be ``{"status", "reason"}`` or flat ``status``/``reason``. Parts of the
    appliance itself (``NOT_PERIPHERALS``: the session, the fleet link) are not listed.
    """
    rows: dict[str, dict[str, Any]] = {}
    retained = view.state("peripherals")
    items: Any = retained.get("peripherals", retained)
    entries = (
        as_list(items)
        if isinstance(items, list)
        else [{"name": k, **as_dict(v)} for k, v in as_dict(items).items() if isinstance(v, Mapping)]
    )
    for entry in entries + as_list(view.data.get("peripherals")):
        entry = as_dict(entry)
        name = entry.get("name")
        if isinstance(name, str) and name and name not in NOT_PERIPHERALS:
            row = rows.setdefault(name, {"name": name})
            row.update(entry)
            health = as_dict(entry.get("health"))
            if health:
                row.setdefault("status", health.get("status"))
                row.setdefault("reason", health.get("reason", ""))
    return [rows[k] for k in sorted(rows)]


def device_name(t: Catalog, row: Mapping[str, Any]) -> str:
    """The device in words (身份证阅读器), by its kind or name; unknown ones as named."""
    for key in (row.get("kind"), row.get("name")):
        if isinstance(key, str) and t.has(f"tech.peripheral.{key}"):
            return t(f"tech.peripheral.{key}")
    return str(row.get("name", "?"))


def reason_text(t: Catalog, row: Mapping[str, Any]) -> str:
    """The health reason in the catalog's words with the port and what to check, else as given."""
    reason = str(row.get("reason") or "").strip()
    if not reason:
        return ""
    for pattern, key in REASONS:
        m = pattern.search(reason)
        if m:
            return t(key, device=device_name(t, row), **m.groupdict())
    return t("tech.reason.other", device=device_name(t, row), reason=reason)


def _size(n: Any) -> str:
    if not isinstance(n, int | float) or isinstance(n, bool):
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


class TechnicianScreen(KioskScreen):
    SCREEN = "technician"
    TITLE_KEY = "tech.title"
    HINT_KEY = "tech.hint"
    ENTITY_ACTIONS = frozenset({"technician_test"})
    # Two-line test buttons: three of them beside the status column at 100x30, the rest page with 7.
    MAX_ENTITIES = 3
    SHORT_MAX_ENTITIES = 2
    # Wall clock of the test results' ``ts``; tests may wind it.
    clock: ClassVar[Callable[[], float]] = staticmethod(time.time)

    def signature(self, view: View) -> object:
        return (super().signature(view), freeze(view.state("peripherals")), freeze(view.state("media")))

    # --- the test-result notice --------------------------------------------------------------------

    def _fresh_test(self) -> Mapping[str, Any] | None:
        notice = self.view.notice
        if notice.get("code") != "test_done":
            return None
        params = as_dict(notice.get("params"))
        test = as_dict(as_dict(self.view.data.get("tests")).get(params.get("peripheral")))
        ts = test.get("ts")
        if isinstance(ts, int | float) and self.clock() - ts > NOTICE_STALE_S:
            return None
        return params

    def notice_text(self) -> str:
        if self.view.notice.get("code") != "test_done":
            return super().notice_text()
        params = self._fresh_test()
        if params is None:
            return ""
        row = next(
            (r for r in peripheral_rows(self.view) if r["name"] == params.get("peripheral")),
            {"name": str(params.get("peripheral", "?"))},
        )
        return self.t(
            "notice.test_done",
            peripheral=device_name(self.t, row),
            status=self.word("tech.test", params.get("status", "")),
        )

    def on_mount(self) -> None:
        self.set_interval(NOTICE_CHECK_S, self._expire_notice)

    def _expire_notice(self) -> None:
        if self.view.notice.get("code") == "test_done" and self._fresh_test() is None:
            for widget in self.query("#notice"):
                widget.remove()

    # --- the page ------------------------------------------------------------------------------------

    def body(self) -> ComposeResult:
        data = self.view.data
        tests = as_dict(data.get("tests"))
        if data.get("pin_is_default"):
            yield Plain(self.t("tech.default_pin"), classes="warning", id="default-pin")
        testable = "technician_test" in self.view.actions
        rows, entities, problems = [], [], []
        for row in peripheral_rows(self.view):
            status = str(row.get("status") or "missing")
            known = status in HEALTH_MARK
            health = f"{HEALTH_MARK[status]} {self.t(f'health.{status}')}" if known else f"? {status}"
            test = as_dict(tests.get(row["name"]))
            result = self.word("tech.test", test.get("status", "")) if test else ""
            if test.get("detail") and test.get("status") == "failed":
                result += f" {test['detail']}"
            line = "  ".join(p for p in (health, device_name(self.t, row), result) if p)
            css = f"health-{status if known else 'unknown'}"
            rows.append((line, css))
            # Each peripheral is its own test button, labelled with what it is and its health.
            entities.append(Entity(line, "technician_test", {"peripheral": row["name"]}, classes=css))
            why = reason_text(self.t, row)
            if why:
                problems.append((f"{HEALTH_MARK.get(status, '?')} {why}", css))
        entity_buttons, action_buttons = self.choices(entities if testable else [])
        with Horizontal(id="tech-columns"):
            with Vertical(id="tech-peripherals"):
                yield Plain(self.t("tech.peripherals"), classes="section")
                if not rows:
                    yield Plain(self.t("tech.no_peripherals"), classes="detail")
                if testable:
                    yield from entity_buttons
                else:
                    for line, css in rows:
                        yield Plain(line, classes=f"detail {css}")
                # Why a device is not well and what to check, in full (wrapped, never cut to a button).
                for text, css in problems:
                    yield Plain(text, classes=f"detail tech-reason {css}")
            with Vertical(id="tech-status"):
                yield Plain("\n".join(self.status_lines()), classes="detail", id="tech-status-lines")
        with Horizontal(classes="actions"):
            yield from action_buttons

    def status_lines(self) -> list[str]:
        """Device, firmware, network, clock, recording, disk, uplink and audio: one line each."""
        data, media = self.view.data, self.view.state("media")
        device, network = as_dict(data.get("device")), as_dict(data.get("network"))
        unknown = self.t("tech.unknown")

        def line(key: str, value: Any) -> str:
            return self.t(key, value=unknown if value in (None, "") else value)

        fleet = network.get("fleet")
        clock = as_dict(data.get("clock"))
        synced = clock.get("synced")
        recording = media.get("recording")
        rec = as_dict(recording)
        disk, uplink, audio = (
            as_dict(media.get("disk")),
            as_dict(media.get("uplink")),
            as_dict(media.get("audio")),
        )
        audio_health = as_dict(audio.get("health")).get("status") or as_dict(audio.get("source")).get(
            "status"
        )
        lines = [
            line("tech.line.device", " ".join(str(device[k]) for k in ("name", "id") if device.get(k))),
            line(
                "tech.line.role", self.word("tech.role", device.get("role")) if device.get("role") else None
            ),
            line("tech.line.firmware", device.get("firmware")),
            line("tech.line.fleet", self.word("tech.fleet", fleet) if fleet else None),
            line("tech.line.address", network.get("detail")),
            line("tech.line.clock", None if synced is None else self.t(f"tech.clock.{bool(synced)}".lower())),
            line(
                "tech.line.recording",
                None
                if not media
                else self.t("tech.recording.on", segments=rec.get("segments", 0))
                if rec
                else self.t("tech.recording.off"),
            ),
            line(
                "tech.line.disk",
                None
                if not disk
                else self.t(
                    "tech.disk", free=_size(disk.get("free_bytes")), used=_size(disk.get("recordings_bytes"))
                ),
            ),
            line("tech.line.uplink", self.word("tech.uplink", uplink.get("state")) if uplink else None),
            line(
                "tech.line.audio",
                None
                if not media
                else self.word("health", audio_health)
                if audio_health
                else self.t("tech.audio.none"),
            ),
        ]
        return lines
