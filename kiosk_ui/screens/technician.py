"""``technician``: device status, peripheral health, network, media, and a test button per peripheral.

The session state's ``view`` carries device, peripherals, network and test results; the retained
``kiosk/local/state/peripherals`` and ``kiosk/local/state/media`` (when published) add detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.screens.base import Entity, KioskScreen, View, as_dict, as_list, freeze
from kiosk_ui.widgets.plain import Plain

HEALTH_MARK = {"ok": "●", "degraded": "▲", "missing": "✖"}


def peripheral_rows(view: View) -> list[dict[str, Any]]:
    """Peripherals by name: the session view's list, completed by the retained peripherals state.

    The retained state may be ``{"peripherals": [inventory...]}`` or ``{name: inventory}``; an
    inventory's ``health`` may be ``{"status", "reason"}`` or flat ``status``/``reason``.
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
        if isinstance(name, str) and name:
            row = rows.setdefault(name, {"name": name})
            row.update(entry)
            health = as_dict(entry.get("health"))
            if health:
                row.setdefault("status", health.get("status"))
                row.setdefault("reason", health.get("reason", ""))
    return [rows[k] for k in sorted(rows)]


def scalar_lines(state: Mapping[str, Any], limit: int = 5) -> list[str]:
    """``key: value`` lines for the plain values of a state (nested objects are skipped)."""
    lines = [f"{k}: {v}" for k, v in state.items() if isinstance(v, str | int | float | bool) and v != ""]
    return lines[:limit]


class TechnicianScreen(KioskScreen):
    SCREEN = "technician"
    TITLE_KEY = "tech.title"
    HINT_KEY = "tech.hint"
    ENTITY_ACTIONS = frozenset({"technician_test"})

    def signature(self, view: View) -> object:
        return (super().signature(view), freeze(view.state("peripherals")), freeze(view.state("media")))

    def body(self) -> ComposeResult:
        data = self.view.data
        tests = as_dict(data.get("tests"))
        if data.get("pin_is_default"):
            yield Plain(self.t("tech.default_pin"), classes="warning", id="default-pin")
        testable = "technician_test" in self.view.actions
        rows, entities = [], []
        for row in peripheral_rows(self.view):
            status = str(row.get("status") or "missing")
            known = status in HEALTH_MARK
            health = f"{HEALTH_MARK[status]} {self.t(f'health.{status}')}" if known else f"? {status}"
            test = as_dict(tests.get(row["name"]))
            result = ""
            if test:
                result = self.word("tech.test", test.get("status", ""))
                if test.get("detail"):
                    result += f" {test['detail']}"
            line = self.t(
                "tech.row", name=row["name"], health=health, reason=row.get("reason") or "", result=result
            ).rstrip()
            css = f"health-{status if known else 'unknown'}"
            rows.append((line, css))
            # Each peripheral is its own test button, labelled with its health: one line per device.
            entities.append(Entity(line, "technician_test", {"peripheral": row["name"]}, classes=css))
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
            with Vertical(id="tech-status"):
                for section, values in (
                    ("tech.device", as_dict(data.get("device"))),
                    ("tech.network", as_dict(data.get("network"))),
                    ("tech.media", self.view.state("media")),
                ):
                    yield Plain(self.t(section), classes="section")
                    yield Plain("\n".join(scalar_lines(values)) or self.t("tech.unknown"), classes="detail")
        with Horizontal(classes="actions"):
            yield from action_buttons
