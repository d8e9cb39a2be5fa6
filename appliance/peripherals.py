"""``Peripherals``: the appliance subsystem that owns every fitted device (cameras excepted).

It builds the card reader, the switcher, the GPIO parts and the receipt printer from ``[drivers.*]``, starts them with the
daemon's ``emit`` as their event sink, and offers the daemon their health, inventory, capabilities and
platform commands (``switcher.route``, ``gpio.set``). Cameras and the document camera are opened by the
kiosk-media process and are not touched here.

It also serves the local RPC service ``sim`` that ``kiosk sim ...`` talks to: present or remove a sample
card, press or hold the help button, trigger presence, unplug/replug a device, inject faults. Those act
only on simulated backends; real hardware answers 409.

It serves the local RPC service ``printer`` (method ``print``) that the session calls to print a
receipt: it answers 200 ``{printed, code, error}`` whatever the printer does, 404 when none is fitted.

Peripheral health is published as retained state ``kiosk/local/state/peripherals`` whenever it changes,
and the status LED shows ``fault`` while any fitted device is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from appliance.subsystem import Context, Subsystem
from drivers.base import Peripheral
from kiosk_core.commands import CommandSpec, NoParams, Params, body_of, parse
from kiosk_core.errors import BadRequest, CommandError, Conflict, KioskError
from kiosk_core.health import Health, HealthStatus

if TYPE_CHECKING:
    from appliance.config import KioskConfig
    from drivers.gpio.driver import Gpio
    from drivers.printer.driver import Printer
    from drivers.switcher.driver import Switcher

log = logging.getLogger("kiosk.drivers")

#: how often health is compared with what was last published
HEALTH_WATCH_S = 0.5

# --- the parameters of the local ``sim`` RPC service (kiosk sim ...) --------------------------------

SimDevice = Literal["card_reader", "switcher", "printer"]


class SimCardParams(Params):
    action: Literal["present", "remove", "samples", "status"]
    card: str | None = None  # the sample card to present (``samples`` lists them)


class SimButtonParams(Params):
    action: Literal["hold", "press"]


class SimPresenceParams(Params):
    action: Literal["cleared", "detected"] = "detected"


class SimPlugParams(Params):
    device: SimDevice


class SimFaultParams(Params):
    """``fault`` ``clear`` removes pending faults; ``code`` is the device error code a switcher
    ``error`` fault answers."""

    device: SimDevice
    fault: str
    count: int = Field(1, ge=1, le=1000)
    code: str | None = Field(None, max_length=8, pattern=r"^[\x00-\x7f]*$")  # ASCII, as E22 or 006


class PrintParams(Params):
    """``printer.print`` on the local bus: one receipt (``drivers.printer.protocol.Receipt``'s fields)."""

    job: Literal["receipt", "appointment"]
    session_id: str | None = Field(None, max_length=64)
    receipt: dict[str, Any]


class Peripherals(Subsystem):
    name = "peripherals"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.devices: dict[str, Peripheral] = {}
        self._watch: asyncio.Task[None] | None = None
        self._published: dict[str, tuple[str, str]] | None = None
        #: a villager's session is running (the status LED blinks "busy")
        self.in_session = False

    # --- building ----------------------------------------------------------------------------------

    def _build(self) -> list[Peripheral]:
        cfg = self.ctx.config.drivers
        built: list[Peripheral] = []
        if cfg.card_reader is not None:
            from drivers.card_reader.driver import CardReader

            built.append(CardReader(cfg.card_reader))
        if cfg.switcher is not None:
            from drivers.switcher.driver import Switcher

            built.append(Switcher(cfg.switcher))
        if cfg.gpio is not None:
            from drivers.gpio.driver import Gpio

            built.append(Gpio(cfg.gpio))
        if cfg.printer is not None:
            from drivers.printer.driver import Printer

            built.append(Printer(cfg.printer, out_dir=self.ctx.data_dir / "printer"))
        return built

    async def start(self) -> None:
        for device in self._build():
            self.devices[device.name] = device
            try:
                await device.start(self.ctx.emit)
            except Exception:  # noqa: BLE001 - one broken driver must not keep the kiosk from starting
                self.ctx.log.exception("%s failed to start; it is reported missing", device.name)
        self.ctx.register_rpc(
            "sim",
            {
                "status": self._sim_status,
                "card": self._sim_card,
                "button": self._sim_button,
                "presence": self._sim_presence,
                "unplug": self._sim_unplug,
                "replug": self._sim_replug,
                "fault": self._sim_fault,
            },
        )
        self.ctx.register_rpc("printer", {"print": self._print})
        self.ctx.listen("session.", self._on_session_event)
        self._publish_if_changed()
        self._watch = asyncio.create_task(self._watch_health(), name="peripherals-health")

    async def stop(self) -> None:
        task, self._watch = self._watch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for device in reversed(list(self.devices.values())):
            try:
                await device.stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                self.ctx.log.exception("%s failed to stop cleanly", device.name)

    # --- what the daemon asks ----------------------------------------------------------------------

    def health(self) -> Mapping[str, Health]:
        out = {}
        for name, device in self.devices.items():
            try:
                out[name] = device.health()
            except Exception as exc:  # noqa: BLE001 - a health bug is itself a health problem
                out[name] = Health(HealthStatus.DEGRADED, f"health check failed: {exc!r}")
        return out

    def inventory(self) -> list[dict[str, Any]]:
        return [device.inventory() for device in self.devices.values()]

    def capabilities(self) -> list[str]:
        caps = set(self.commands())
        caps.update(device.kind for device in self.devices.values())
        if any(device.backend in ("sim", "mock") for device in self.devices.values()):
            caps.add("sim")
        return sorted(caps)

    def commands(self) -> Mapping[str, CommandSpec]:
        merged: dict[str, CommandSpec] = {}
        for device in self.devices.values():
            merged.update(device.commands())
        return merged

    def telemetry(self) -> dict[str, Any]:
        return {name: str(h.status) for name, h in self.health().items()}

    async def reconfigure(self, new: KioskConfig) -> list[str]:
        old = self.ctx.config.drivers
        # Devices are rebuilt only on restart: a port or protocol change mid-session could cut a
        # villager's card read or a clerk's call.
        return [
            f"drivers.{key}"
            for key in type(old).model_fields
            if getattr(old, key) != getattr(new.drivers, key)
        ]

    # --- health publishing -------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, tuple[str, str]]:
        return {name: (str(h.status), h.reason) for name, h in self.health().items()}

    def _publish_if_changed(self) -> None:
        snap = self._snapshot()
        if snap == self._published:
            return
        self._published = snap
        # The shape the kiosk UI's technician screen reads: a list of inventories, each with health.
        self.ctx.publish_state(
            "peripherals",
            {
                "peripherals": self.inventory(),
                "ok": all(h.status is HealthStatus.OK for h in self.health().values()),
            },
        )
        self._show_status()

    def _show_status(self) -> None:
        """Status LED: fault while a fitted device is missing, else busy during a session, else ready."""
        gpio = self._gpio()
        if gpio is None or gpio.health().status is not HealthStatus.OK:
            return
        from drivers.gpio.status_led import LedState

        if any(h.status is HealthStatus.MISSING for h in self.health().values()):
            gpio.show_status(LedState.FAULT)
        else:
            gpio.show_status(LedState.BUSY if self.in_session else LedState.READY)

    def _on_session_event(self, type: str, data: dict[str, Any]) -> None:
        if type == "session.started":
            self.in_session = True
        elif type == "session.ended":
            self.in_session = False
        elif type == "session.card.left":  # the session's signal: a card was left on the reader
            gpio = self._gpio()
            if gpio is not None and gpio.health().status is HealthStatus.OK:
                gpio.beep()
            return
        elif type == "session.card.read_again":  # the session's signal: read the card lying there
            read_again = getattr(self.devices.get("card_reader"), "read_again", None)
            if callable(read_again):
                read_again()
            return
        else:
            return
        self._show_status()

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_WATCH_S)
            try:
                self._publish_if_changed()
            except KioskError as exc:
                log.warning("could not publish peripheral health: %s", exc)

    # --- the `printer` RPC service ---------------------------------------------------------------

    def _printer(self) -> Printer | None:
        device = self.devices.get("printer")
        return device  # type: ignore[return-value]

    async def _print(self, params: dict[str, Any]) -> dict[str, Any]:
        """Print one receipt: 200 ``{printed: true, bytes}`` or ``{printed: false, code, error}``; the
        printer's own faults are answers, not errors, so the session can tell the villager what to do."""
        from drivers.printer.errors import PrinterError, ReceiptError
        from drivers.printer.protocol import Receipt

        p = parse("printer.print", PrintParams, params)
        printer = self._printer()
        if printer is None:
            raise CommandError(404, "no receipt printer is fitted in this kiosk (no [drivers.printer])")
        r = dict(p.receipt)
        extra = r.pop("extra", [])
        try:
            receipt = Receipt(**r, extra=tuple(tuple(x) for x in extra)).checked()
        except (
            TypeError,
            ValueError,
        ) as exc:  # ReceiptError is a ValueError; TypeError: missing/unknown field
            raise BadRequest(f"printer.print: {exc}") from None
        try:
            out = await printer.print_receipt(receipt, job=p.job, session_id=p.session_id)
        except ReceiptError as exc:
            raise BadRequest(f"printer.print: {exc}") from None
        except PrinterError as exc:
            self._publish_if_changed()
            return {"printed": False, "code": exc.code, "error": exc.message}
        self._publish_if_changed()
        return {"printed": True, **out}

    # --- the `sim` RPC service ----------------------------------------------------------------------

    def _gpio(self) -> Gpio | None:
        device = self.devices.get("gpio")
        return device  # type: ignore[return-value]

    def _device(self, name: str) -> Peripheral:
        device = self.devices.get(name)
        if device is None:
            raise CommandError(404, f"no {name} is fitted in this kiosk (no [drivers.{name}] in the config)")
        if device.backend not in ("sim", "mock"):
            raise Conflict(
                f'{name} is real hardware (backend = "{device.backend}"): kiosk sim acts only on '
                "simulated devices"
            )
        return device

    def _card_sim(self) -> Any:
        device = self._device("card_reader")
        sim = getattr(device, "simulator", None)
        if sim is None:
            raise Conflict("the card reader simulator is not running yet")
        return sim

    def _switcher(self) -> Switcher:
        device = self._device("switcher")
        if getattr(device, "simulator", None) is None:
            raise Conflict("the switcher simulator is not running")
        return device  # type: ignore[return-value]

    async def _sim_status(self, params: dict[str, Any]) -> dict[str, Any]:
        parse("sim.status", NoParams, params)
        out: dict[str, Any] = {
            "devices": {n: {"backend": d.backend, **d.health().as_dict()} for n, d in self.devices.items()}
        }
        card = self.devices.get("card_reader")
        if card is not None and getattr(card, "simulator", None) is not None:
            out["card_reader"] = await asyncio.to_thread(card.simulator.status)  # type: ignore[attr-defined]
        printer = self.devices.get("printer")
        if printer is not None and getattr(printer, "simulator", None) is not None:
            out["printer"] = printer.simulator.status()  # type: ignore[attr-defined]
        switcher = self.devices.get("switcher")
        sim = getattr(switcher, "simulator", None)
        if sim is not None:
            out["switcher"] = {
                "plugged": sim.plugged,
                "pending_faults": [f.kind for f in sim.faults],
                "ties": {
                    str(layer): {str(o): i for o, i in sorted(ties.items())}
                    for layer, ties in sim.matrix.ties.items()
                },
            }
        return out

    async def _sim_card(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{action: present|remove|samples|status, card?}`` on the SAM emulator."""
        from drivers.card_reader.simulator import control

        p = parse("sim.card", SimCardParams, params)
        return await asyncio.to_thread(control, self._card_sim(), p.action, body_of(p))

    async def _sim_button(self, params: dict[str, Any]) -> dict[str, Any]:
        action = parse("sim.button", SimButtonParams, params).action
        gpio = self._device("gpio")
        try:
            if action == "press":
                await gpio.press_help()  # type: ignore[attr-defined]
            else:
                await gpio.hold_help()  # type: ignore[attr-defined]
        except KioskError as exc:
            raise Conflict(exc.message) from None
        return {"button": "help", "action": action}

    async def _sim_presence(self, params: dict[str, Any]) -> dict[str, Any]:
        action = parse("sim.presence", SimPresenceParams, params).action
        gpio = self._device("gpio")
        try:
            gpio.set_presence(action == "detected")  # type: ignore[attr-defined]
        except KioskError as exc:
            raise Conflict(exc.message) from None
        return {"presence": action}

    async def _printer_fault(self, fault: str) -> dict[str, Any]:
        """no_paper | near_end | cover_open | offline, or clear; health is checked again at once."""
        from drivers.printer.config import SIM_FAULTS

        printer = self._device("printer")
        sim = getattr(printer, "simulator", None)
        if sim is None:
            raise Conflict("the printer simulator is not running")
        if fault == "clear":
            sim.clear()
        elif fault in SIM_FAULTS:
            sim.inject(fault)
        else:
            raise BadRequest(f"sim.fault: printer faults are {', '.join(SIM_FAULTS)} or clear, got {fault!r}")
        await printer.check()  # type: ignore[attr-defined]
        self._publish_if_changed()
        return {
            "device": "printer",
            "fault": fault,
            "faults": sim.faults,
            "health": printer.health().as_dict(),
        }

    async def _plug(self, params: dict[str, Any], plugged: bool) -> dict[str, Any]:
        name = "sim.replug" if plugged else "sim.unplug"
        device = parse(name, SimPlugParams, params).device
        if device == "printer":  # a printer's cable pulled: it answers nothing, as when switched off
            return {**await self._printer_fault("clear" if plugged else "offline"), "plugged": plugged}
        if device == "card_reader":
            sim = self._card_sim()
            await asyncio.to_thread(sim.replug if plugged else sim.unplug)
        else:
            sim = self._switcher().simulator
            assert sim is not None
            await (sim.replug() if plugged else sim.unplug())
        return {"device": device, "plugged": plugged}

    async def _sim_unplug(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._plug(params, False)

    async def _sim_replug(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._plug(params, True)

    async def _sim_fault(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{device, fault, count?, code?}``; fault ``clear`` removes pending faults."""
        p = parse("sim.fault", SimFaultParams, params)
        device, fault, count, code = p.device, p.fault, p.count, p.code
        if device == "printer":
            return await self._printer_fault(fault)
        if device == "card_reader":
            sim = self._card_sim()
            if fault == "clear":
                await asyncio.to_thread(sim.clear_faults)
            else:
                await asyncio.to_thread(sim.inject, fault, count)
            return {"device": device, "fault": fault, "count": count}
        sim = self._switcher().simulator
        assert sim is not None
        if fault == "clear":
            sim.clear_faults()
        else:
            sim.inject(fault, times=count, code=code)
        return {"device": device, "fault": fault, "count": count}
