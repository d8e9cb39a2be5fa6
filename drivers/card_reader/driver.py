"""``CardReader``: the resident ID card reader as a ``Peripheral``.

One asyncio task owns the reader. It polls "find card" every ``poll_interval_s`` and emits:

* ``card.inserted`` ``{reader}`` when a card appears;
* ``card.read``: the card type, the masked number, ``validity``, ``valid`` and ``problems``
  (``FLEET_FIELDS``); the identity itself (name, sex, birth, nation, address, issuer, the unmasked
  number, photo bytes, the ``Identity`` object) only under ``_private``, a key the daemon strips before
  anything is stored or published, so it reaches in-process listeners only;
* ``card.removed`` ``{reader, reason}`` after ``removal_misses`` "no card" answers, or when the reader
  is lost with a card on it;
* ``card.error`` ``{reader, code, message, attempts}`` when a presented card cannot be read.

Serial I/O is blocking and runs on one dedicated worker thread, one transaction at a time. Health is
``ok`` while the SAM answers, ``degraded`` after ``degraded_after`` failing polls in a row (noise,
corrupted frames, SAM errors), ``missing`` when the port is gone or ``missing_after`` polls in a row went
unanswered; the port is then closed and reopened with exponential backoff and jitter.

No log line and no public event field ever carries an unmasked ID number.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from drivers.base import EventSink, Peripheral
from drivers.card_reader import errors as e
from drivers.card_reader.config import CardReaderConfig
from drivers.card_reader.identity import Identity, decode_address, parse_identity
from drivers.card_reader.photo import decode_photo, load_decoder
from drivers.card_reader.protocol import CardBlocks
from drivers.card_reader.sam import SamLink
from drivers.card_reader.simulator import SamEmulator
from drivers.card_reader.transport import SerialTransport, Transport, UsbTransport
from kiosk_core.health import Health, HealthStatus
from kiosk_core.supervisor import DeviceSupervisor, supervise

log = logging.getLogger("drivers.card_reader")

T = TypeVar("T")

MODEL = "SAM ID card reader (身份证阅读机具), serial or USB bulk"
# What of a card a card.read event carries (it is stored and sent to the platform): the kind of card,
# the masked numbers, and whether it passed validation. Everything else of Identity.as_public() is
# personal and only in _private. An allow-list: a field added to the identity later stays private.
FLEET_FIELDS = frozenset(
    {
        "card_type",
        "card_title",
        "id_number_masked",
        "pass_number_masked",
        "validity",
        "valid",
        "problems",
        "photo",
    }
)


class CardReader(Peripheral):
    kind = "card_reader"

    def __init__(
        self,
        config: CardReaderConfig,
        *,
        name: str = "card_reader",
        emulator: SamEmulator | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(name, model=MODEL, backend=config.backend)
        self.config = config
        self._emulator = emulator
        self._owns_emulator = False
        self._transport = transport
        self._photo_decoder = load_decoder(config.photo_decoder)
        self._supervisor = DeviceSupervisor(
            "card reader",
            base_s=config.reconnect_base_s,
            cap_s=config.reconnect_cap_s,
            classify=self._classify,
            is_device_error=lambda exc: isinstance(exc, e.CardReaderError),
            logger=log,
        )
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._emit: EventSink | None = None
        self._link: SamLink | None = None
        self._card_present = False
        self._card_done = False
        self._misses = 0
        self._failures = 0
        self._silent_polls = 0
        self.sam_id: str | None = None
        #: what happened, by name: reads, errors by code, reconnects (diagnostics and tests)
        self.stats: Counter[str] = Counter()

    # --- Peripheral ------------------------------------------------------------------------------

    @property
    def port(self) -> str:
        if self._transport is not None:
            return self._transport.port
        if self._emulator is not None:
            return self._emulator.port
        if self.config.backend == "usb" and self.config.usb is not None:
            return f"usb:{self.config.usb.vendor_id:04x}:{self.config.usb.product_id:04x}"
        return self.config.port

    @property
    def simulator(self) -> SamEmulator | None:
        """The emulator behind a ``sim`` backend (for ``kiosk sim card ...``), else None."""
        return self._emulator

    @property
    def wire_stats(self) -> Counter[str]:
        """What went wrong on the wire (bad checksums, noise bytes, timeouts...), by error code."""
        return self._link.stats if self._link is not None else Counter()

    @property
    def card_present(self) -> bool:
        return self._card_present

    def read_again(self) -> bool:
        """Read the card lying on the reader once more at the next poll (a new session starts with a
        card already there). False, and nothing happens, when no card is on the reader."""
        if not self._card_present:
            return False
        self._card_done = False
        return True

    def health(self) -> Health:
        return self._supervisor.health

    def inventory(self) -> dict[str, Any]:
        return super().inventory() | {
            "port": self.port,
            "baudrate": self.config.baudrate,
            "sam_id": self.sam_id,
            "card_present": self._card_present,
        }

    async def start(self, emit: EventSink) -> None:
        if self._task is not None:
            return
        self._emit = emit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-io")
        if self.config.backend == "sim" and self._emulator is None:
            sim = self.config.sim
            self._emulator = SamEmulator(
                baudrate=self.config.baudrate,
                pace=sim.pace,
                slow_reply_s=sim.slow_reply_s,
                sam_latency_s=sim.sam_latency_s,
                seed=sim.seed,
                initial_card=sim.initial_card,
                halt_after_read=sim.halt_after_read,
            )
            self._owns_emulator = True
            await self._call(self._emulator.start)
        if self._transport is None and self.config.backend == "usb":
            usb = self.config.usb
            assert usb is not None  # the config requires it for this backend
            self._transport = UsbTransport(
                usb.vendor_id,
                usb.product_id,
                interface=usb.interface,
                endpoint_in=usb.endpoint_in,
                endpoint_out=usb.endpoint_out,
            )
        if self._transport is None:
            port = (
                self._emulator.port if self.config.backend == "sim" and self._emulator else self.config.port
            )
            self._transport = SerialTransport(port, self.config.baudrate)
        self._link = SamLink(
            self._transport, baudrate=self.config.baudrate, timeouts=self.config.reply_timeouts()
        )
        self._supervisor.device = f"card reader on {self.port}"
        self._supervisor.reset(f"connecting to the card reader on {self.port}")
        self._task = asyncio.create_task(
            supervise(self._supervisor, self._session, close=self._close), name=f"{self.name}-poll"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._executor is not None:
            # Queued behind any transaction still running, which its own deadline bounds.
            if self._transport is not None:
                await self._call(self._transport.close)
            if self._owns_emulator and self._emulator is not None:
                await self._call(self._emulator.stop)
                self._emulator = None
                self._owns_emulator = False
                self._transport = None
            self._executor.shutdown(wait=False)
            self._executor = None
        self._card_present = False
        if self.health().reason != "stopped":
            self._supervisor.reset("stopped")
            log.info("card reader on %s stopped", self.port)

    # --- plumbing --------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _send(self, type: str, data: dict[str, Any]) -> None:
        if self._emit is None:
            return
        try:
            await self._emit(type, data)
        except Exception:  # the sink's failure is the daemon's to report; the reader keeps reading
            log.exception("could not hand over the %s event", type)

    # --- the poll loop ---------------------------------------------------------------------------

    async def _session(self) -> None:
        """One connection: open the port and ask the SAM, then poll until the reader is lost (raises
        why; a card still on it is reported removed, and announced again after the reconnect)."""
        await self._call(self._connect)
        self._failures = self._silent_polls = 0
        self._supervisor.ok()
        try:
            while True:
                await self._poll()
                await asyncio.sleep(self.config.poll_interval_s)
        except Exception:
            self.stats["lost"] += 1
            if self._card_present:
                self._card_present = False
                await self._send("card.removed", {"reader": self.name, "reason": "reader_lost"})
            raise

    async def _poll(self) -> None:
        """One poll. Raises when the reader is lost: its port is gone, or ``missing_after`` polls in a
        row went unanswered."""
        try:
            await self._poll_once()
        except e.ReaderMissing:
            raise
        except e.NoReply as exc:
            self._count_failure(exc)
            self._silent_polls += 1
            if self._silent_polls >= self.config.missing_after:
                raise e.ReaderMissing(exc.message) from exc  # silent that long: as good as unplugged
        except e.CardReaderError as exc:
            self._silent_polls = 0
            self._count_failure(exc)
        else:
            self._failures = self._silent_polls = 0
            self._supervisor.ok()

    def _classify(self, exc: Exception, serving: bool) -> Health:
        if not isinstance(exc, e.CardReaderError):
            self.stats["internal_error"] += 1
            return Health(HealthStatus.DEGRADED, "internal error in the card reader driver (see log)")
        # Absent or silent: missing. Answering, but with errors or corrupted frames: there but unusable,
        # degraded (a SAM failing its self-test, a noisy cable).
        absent = isinstance(exc, e.ReaderMissing | e.NoReply) and not isinstance(exc, e.TruncatedFrame)
        return Health(HealthStatus.MISSING if absent else HealthStatus.DEGRADED, exc.message)

    async def _close(self) -> None:
        await self._call(self._disconnect)

    def _connect(self) -> None:
        assert self._transport is not None and self._link is not None
        self._transport.open()
        self._link.sam_status()
        try:
            self.sam_id = self._link.sam_id()
        except e.SamStatusError:
            self.sam_id = None  # some readers do not tell: not a reason to refuse them
        self.stats["connects"] += 1

    def _disconnect(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _count_failure(self, exc: e.CardReaderError) -> None:
        self._failures += 1
        self.stats[exc.code] += 1
        log.debug("card reader poll failed: %s", exc)
        if self._failures >= self.config.degraded_after:
            self._supervisor.set_health(
                HealthStatus.DEGRADED, f"{self._failures} failed polls in a row, last: {exc.message}"
            )

    async def _poll_once(self) -> None:
        assert self._link is not None
        found = await self._call(self._link.find_card)
        if found:
            self._misses = 0
            if not self._card_present:
                self._card_present, self._card_done = True, False
                await self._send("card.inserted", {"reader": self.name})
            if not self._card_done:
                await self._read_presented_card()
        elif self._card_present:
            self._misses += 1
            if self._misses >= self.config.removal_misses:
                self._card_present, self._misses = False, 0
                await self._send("card.removed", {"reader": self.name, "reason": "removed"})

    # --- reading a card --------------------------------------------------------------------------

    def _read_blocking(self, refind: bool) -> tuple[CardBlocks, bytes]:
        assert self._link is not None
        if refind and not self._link.find_card():
            raise e.NoCard(
                f"the card left the reader on {self.port} during the read: place it flat and hold it still"
            )
        self._link.select_card()
        blocks = self._link.read_blocks(fingerprint=self.config.fingerprint)
        address = self._link.read_additional_address() if self.config.additional_address else b""
        return blocks, address

    async def _read_presented_card(self) -> None:
        started = time.monotonic()
        failure: e.CardReaderError | None = None
        attempts = 0
        identity: Identity | None = None
        for attempts in range(1, self.config.read_attempts + 1):  # noqa: B007 - attempts is reported
            try:
                blocks, address = await self._call(self._read_blocking, attempts > 1)
                identity = parse_identity(blocks.text)
            except e.ReaderMissing:
                raise
            except e.CardReaderError as exc:
                failure = exc
                self.stats[exc.code] += 1
                if not exc.transient:
                    break
                continue
            status, image = await self._call(decode_photo, blocks.photo, self._photo_decoder)
            identity = dataclasses.replace(
                identity,
                photo_wlt=blocks.photo,
                photo_image=image,
                photo_status=status,
                fingerprint=blocks.fingerprint,
                additional_address=decode_address(address),
            )
            break
        self._card_done = True
        elapsed_ms = round((time.monotonic() - started) * 1000)
        if identity is None:
            assert failure is not None
            self.stats["card_errors"] += 1
            log.warning("card on the reader could not be read after %d attempt(s): %s", attempts, failure)
            await self._send(
                "card.error",
                {"reader": self.name, "code": failure.code, "message": failure.message, "attempts": attempts},
            )
            return
        self.stats["reads"] += 1
        if identity.valid:
            log.info(
                "card read: %s %s in %d ms (%d attempt(s))",
                identity.card_type.value,
                identity.id_number_masked,
                elapsed_ms,
                attempts,
            )
        else:
            log.warning(
                "card read but its data failed validation: %s %s: %s",
                identity.card_type.value,
                identity.id_number_masked,
                "; ".join(identity.problems),
            )
        # The event leaves the device: what card, masked number, whether it is valid. Who the villager
        # is (name, sex, birth, nation, address, issuer, ...) goes under _private to the session only.
        fields = identity.as_public()
        data = {k: v for k, v in fields.items() if k in FLEET_FIELDS}
        data |= {"reader": self.name, "read_ms": elapsed_ms, "attempts": attempts}
        data["_private"] = (
            {k: v for k, v in fields.items() if k not in FLEET_FIELDS}
            | identity.as_private()
            | {"identity": identity}
        )
        await self._send("card.read", data)
