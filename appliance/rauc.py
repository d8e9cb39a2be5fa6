"""The thin D-Bus adapter to RAUC's installer service (``de.pengutronix.rauc.Installer``).

RAUC publishes the interface in ``de.pengutronix.rauc.Installer.xml`` (RAUC's docs, "D-Bus API"): the
service ``de.pengutronix.rauc`` serves it at object path ``/`` on the system bus. ``INTERFACE_XML``
below declares the part the kiosk uses, so the proxy never depends on the service's own introspection:

- methods ``InstallBundle(s source, a{sv} args)``, ``Mark(s state, s slot_identifier) -> (s slot_name,
  s message)``, ``GetSlotStatus() -> a(sa{sv})``, ``GetPrimary() -> s``;
- properties ``Operation`` (s, ``idle`` / ``installing``), ``LastError`` (s), ``Progress`` ((isi):
  percent, message, nesting depth), ``Compatible`` (s), ``Variant`` (s), ``BootSlot`` (s, the booted
  slot's bootname);
- signal ``Completed(i result)``, 0 for success; ``Progress`` changes come as
  ``org.freedesktop.DBus.Properties.PropertiesChanged``.

Every dbus-fast exception (and the OS errors of a missing socket) is translated here, once, into the
firmware's error tree: ``UpdaterUnavailable`` when nothing answers, ``UpdaterFailed`` when RAUC answered
with an error. Nothing above this module sees dbus-fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import AuthError, InvalidAddressError
from dbus_fast.introspection import Node

from kiosk_core.errors import UpdaterFailed, UpdaterUnavailable
from kiosk_core.tasks import wait_for

log = logging.getLogger("kiosk.ota.rauc")

SERVICE = "de.pengutronix.rauc"
OBJECT_PATH = "/"
INTERFACE = "de.pengutronix.rauc.Installer"
PROPERTIES = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT_S = 10.0

# The members of RAUC's published interface the kiosk uses (plus the standard Properties interface, for
# PropertiesChanged). Also what the stand-in (sim/rauc_service.py) implements.
INTERFACE_XML = f"""<node>
  <interface name="{INTERFACE}">
    <method name="InstallBundle">
      <arg name="source" type="s" direction="in"/>
      <arg name="args" type="a{{sv}}" direction="in"/>
    </method>
    <method name="Mark">
      <arg name="state" type="s" direction="in"/>
      <arg name="slot_identifier" type="s" direction="in"/>
      <arg name="slot_name" type="s" direction="out"/>
      <arg name="message" type="s" direction="out"/>
    </method>
    <method name="GetSlotStatus">
      <arg name="slot_status_array" type="a(sa{{sv}})" direction="out"/>
    </method>
    <method name="GetPrimary">
      <arg name="primary" type="s" direction="out"/>
    </method>
    <property name="Operation" type="s" access="read"/>
    <property name="LastError" type="s" access="read"/>
    <property name="Progress" type="(isi)" access="read"/>
    <property name="Compatible" type="s" access="read"/>
    <property name="Variant" type="s" access="read"/>
    <property name="BootSlot" type="s" access="read"/>
    <signal name="Completed">
      <arg name="result" type="i"/>
    </signal>
  </interface>
  <interface name="{PROPERTIES}">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{{sv}}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
</node>
"""


@dataclass(frozen=True)
class Progress:
    """RAUC's ``Progress`` property: overall percent, the current step's message, its nesting depth."""

    percent: int
    message: str
    depth: int


@dataclass(frozen=True)
class Slot:
    """One entry of ``GetSlotStatus``, the keys the kiosk reads (RAUC's names in the comments)."""

    name: str  # the slot's name in system.conf, e.g. rootfs.0
    bootname: str  # "bootname": what the bootloader calls it, e.g. A
    slot_class: str  # "class", e.g. rootfs
    state: str  # "state": booted / active / inactive
    boot_status: str  # "boot-status": good / bad ("" when RAUC does not know)
    version: str  # "bundle.version": of the bundle last installed there ("" when never)
    status: str  # "status": ok / failed / pending: the outcome of the last write there

    @classmethod
    def from_dbus(cls, name: str, info: dict[str, Any]) -> Slot:
        def text(key: str) -> str:
            value = info.get(key)
            value = value.value if isinstance(value, Variant) else value
            return value if isinstance(value, str) else ""

        return cls(
            name=name,
            bootname=text("bootname") or name,
            slot_class=text("class"),
            state=text("state"),
            boot_status=text("boot-status"),
            version=text("bundle.version"),
            status=text("status"),
        )


@contextlib.asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    """The one place dbus-fast's and the socket's exceptions become the firmware's."""
    try:
        yield
    except DBusError as exc:
        if exc.type in (
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
            "org.freedesktop.DBus.Error.NoReply",
            "org.freedesktop.DBus.Error.Disconnected",
        ):
            raise UpdaterUnavailable(f"RAUC ({SERVICE}) does not answer {what}: {exc.text}") from None
        raise UpdaterFailed(f"RAUC refused {what}: {exc.text}", dbus_name=exc.type) from None
    except (OSError, EOFError, AuthError, InvalidAddressError) as exc:
        raise UpdaterUnavailable(f"no D-Bus to reach RAUC ({what}): {exc}") from None
    except TimeoutError:
        raise UpdaterUnavailable(f"RAUC did not answer {what} within {CALL_TIMEOUT_S:g} s") from None


class Rauc:
    """A connection to RAUC's installer. ``address`` empty: the system bus.

    ``on_completed`` and ``on_progress`` callbacks run on the event loop. ``disconnected`` is set when
    the bus connection goes away (the service or the bus restarted); open a new ``Rauc`` then.
    """

    def __init__(self, address: str = "") -> None:
        self.address = address
        self._bus: MessageBus | None = None
        self._iface: Any = None
        self.disconnected = asyncio.Event()
        self._completed: list[Callable[[int], None]] = []
        self._progress: list[Callable[[Progress], None]] = []

    @property
    def where(self) -> str:
        return self.address or "the system bus"

    async def connect(self) -> Rauc:
        """Connect and check that RAUC answers; raises ``UpdaterUnavailable`` otherwise."""
        async with _translated(f"connecting to {self.where}"):
            bus = (
                MessageBus(bus_address=self.address) if self.address else MessageBus(bus_type=BusType.SYSTEM)
            )
            self._bus = await wait_for(bus.connect(), CALL_TIMEOUT_S)
        try:
            async with _translated("the name look-up"):
                reply = await wait_for(
                    self._bus.call(
                        Message(
                            destination="org.freedesktop.DBus",
                            path="/org/freedesktop/DBus",
                            interface="org.freedesktop.DBus",
                            member="NameHasOwner",
                            signature="s",
                            body=[SERVICE],
                        )
                    ),
                    CALL_TIMEOUT_S,
                )
            if reply is None or reply.message_type != MessageType.METHOD_RETURN or not reply.body[0]:
                raise UpdaterUnavailable(f"no RAUC service ({SERVICE}) on {self.where}")
            proxy = self._bus.get_proxy_object(SERVICE, OBJECT_PATH, Node.parse(INTERFACE_XML))
            self._iface = proxy.get_interface(INTERFACE)
            self._iface.on_completed(self._on_completed)
            proxy.get_interface(PROPERTIES).on_properties_changed(self._on_properties)
            await self.boot_slot()  # the service itself answers, not only the bus
        except BaseException:
            self.close()
            raise
        asyncio.get_running_loop().create_task(self._watch(self._bus), name="rauc-bus-watch")
        return self

    async def _watch(self, bus: MessageBus) -> None:
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()
        self.disconnected.set()

    def close(self) -> None:
        """Disconnect; idempotent."""
        if self._bus is not None:
            with contextlib.suppress(Exception):
                self._bus.disconnect()
            self._bus = None
        self.disconnected.set()

    # --- signals ----------------------------------------------------------------------------------

    def on_completed(self, callback: Callable[[int], None]) -> None:
        self._completed.append(callback)

    def on_progress(self, callback: Callable[[Progress], None]) -> None:
        self._progress.append(callback)

    def _on_completed(self, result: int) -> None:
        for cb in list(self._completed):
            cb(int(result))

    def _on_properties(self, interface: str, changed: dict[str, Variant], invalidated: list[str]) -> None:
        if interface != INTERFACE or "Progress" not in changed:
            return
        progress = _progress(changed["Progress"].value)
        for cb in list(self._progress):
            cb(progress)

    # --- methods and properties -------------------------------------------------------------------

    def _require(self) -> Any:
        if self._iface is None or self.disconnected.is_set():
            raise UpdaterUnavailable(f"not connected to RAUC on {self.where}")
        return self._iface

    async def install_bundle(self, source: str, args: dict[str, Any] | None = None) -> None:
        """Start installing ``source`` (a path or URL RAUC can read); the outcome is ``Completed``."""
        iface = self._require()
        variants = {k: v if isinstance(v, Variant) else _variant(v) for k, v in (args or {}).items()}
        async with _translated("InstallBundle"):
            await wait_for(iface.call_install_bundle(source, variants), CALL_TIMEOUT_S)

    async def mark(self, state: str, slot: str = "booted") -> tuple[str, str]:
        """``Mark(state, slot)`` with state good / bad / active: (the slot marked, RAUC's message)."""
        iface = self._require()
        async with _translated(f"Mark({state!r}, {slot!r})"):
            name, message = await wait_for(iface.call_mark(state, slot), CALL_TIMEOUT_S)
        return str(name), str(message)

    async def slots(self) -> list[Slot]:
        iface = self._require()
        async with _translated("GetSlotStatus"):
            raw = await wait_for(iface.call_get_slot_status(), CALL_TIMEOUT_S)
        return [Slot.from_dbus(str(name), dict(info)) for name, info in raw]

    async def primary(self) -> str:
        iface = self._require()
        async with _translated("GetPrimary"):
            return str(await wait_for(iface.call_get_primary(), CALL_TIMEOUT_S))

    async def _get(self, prop: str) -> Any:
        iface = self._require()
        async with _translated(f"the {prop} property"):
            return await wait_for(getattr(iface, f"get_{_snake(prop)}")(), CALL_TIMEOUT_S)

    async def boot_slot(self) -> str:
        return str(await self._get("BootSlot"))

    async def operation(self) -> str:
        return str(await self._get("Operation"))

    async def last_error(self) -> str:
        return str(await self._get("LastError"))

    async def compatible(self) -> str:
        return str(await self._get("Compatible"))

    async def progress(self) -> Progress:
        return _progress(await self._get("Progress"))


def _progress(value: Any) -> Progress:
    percent, message, depth = value
    return Progress(int(percent), str(message), int(depth))


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _variant(value: Any) -> Variant:
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, str):
        return Variant("s", value)
    raise TypeError(f"InstallBundle args: no D-Bus type for {type(value).__name__}")
