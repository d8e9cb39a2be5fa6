"""``Printer``: the thermal receipt printer as a ``Peripheral``.

``print_receipt(receipt, job=..., session_id=...)`` lays the receipt out as ESC/POS, asks the printer
its real-time status (DLE EOT 1, 2, 4), sends the receipt only to a ready printer, and asks again after
(the roll may end mid-receipt). It runs on the driver's one worker thread and is bounded by
``print_timeout_s``: a printer that hangs never holds the caller longer. It emits

* ``printer.printed`` ``{printer, job, session_id, bytes}`` after a receipt went out;
* ``printer.failed`` ``{printer, job, session_id, code, error}`` when it did not (``printer.no_paper``,
  ``printer.cover_open``, ``printer.offline``, ``printer.missing``, ...), and raises the ``PrinterError``.

Health is ``ok`` while the printer answers and is ready; ``degraded`` with the reason when it answers
but cannot print (no paper, cover open, its own error) or the paper runs low; ``missing`` when the port
is gone or the printer answers no status. It is refreshed by every job and every ``poll_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from drivers.base import EventSink, Peripheral
from drivers.printer import errors as e
from drivers.printer.config import PrinterConfig
from drivers.printer.protocol import PrinterStatus, Receipt, build_receipt, status_request
from drivers.printer.simulator import PrinterSimulator
from drivers.printer.transport import SerialTransport, Transport, UsbTransport
from kiosk_core.health import Health, HealthStatus

log = logging.getLogger("drivers.printer")

MODEL = "ESC/POS thermal receipt printer (热敏小票打印机)"


def problem_of(status: PrinterStatus) -> e.PrinterError | None:
    """The error a printer in ``status`` gives a print job, or None when it can print."""
    if status.paper_end:
        return e.PaperOut("the receipt printer is out of paper: put in a new roll (58/80 mm thermal paper)")
    if status.cover_open:
        return e.CoverOpen("the receipt printer's cover is open: close it until it clicks")
    if status.cutter_error:
        return e.PrinterFault("the receipt printer's cutter is jammed: open the cover and clear the paper")
    if status.error or status.offline:
        return e.PrinterFault("the receipt printer reports an error: switch it off and on again")
    return None


class Printer(Peripheral):
    kind = "printer"

    def __init__(
        self,
        config: PrinterConfig,
        *,
        name: str = "printer",
        transport: Transport | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        backend = config.backend
        super().__init__(name, model=MODEL, backend=backend)
        self.config = config
        self._transport = transport
        self._out_dir = config.sim.out_dir or (str(out_dir) if out_dir is not None else None)
        self.simulator: PrinterSimulator | None = None
        self._health = Health(HealthStatus.MISSING, "the receipt printer has not been checked yet")
        self._emit: EventSink | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="printer")
        self._job_lock = asyncio.Lock()
        self._poll: asyncio.Task[None] | None = None
        self.last_status: PrinterStatus | None = None

    # --- Peripheral ------------------------------------------------------------------------------

    @property
    def port(self) -> str:
        return self._transport.port if self._transport is not None else self.config.port

    @property
    def out_dir(self) -> str | None:
        """Where the simulator writes its receipt images (sim backend only)."""
        return str(self.simulator.out_dir) if self.simulator and self.simulator.out_dir else None

    def health(self) -> Health:
        return self._health

    def inventory(self) -> dict[str, Any]:
        inv = super().inventory()
        inv.update(port=self.port, protocol="escpos", paper_dots=self.config.paper_dots)
        if self.out_dir:
            inv["images"] = self.out_dir
        return inv

    async def start(self, emit: EventSink) -> None:
        self._emit = emit
        if self._transport is None:
            cfg = self.config
            if cfg.backend == "sim":
                self.simulator = PrinterSimulator(
                    paper_dots=cfg.paper_dots, out_dir=self._out_dir, fault=cfg.sim.initial_fault
                ).start()
                self._transport = SerialTransport(self.simulator.port, cfg.baudrate)
            elif cfg.backend == "usb":
                assert cfg.usb is not None
                u = cfg.usb
                self._transport = UsbTransport(
                    u.vendor_id,
                    u.product_id,
                    interface=u.interface,
                    endpoint_in=u.endpoint_in,
                    endpoint_out=u.endpoint_out,
                )
            else:
                self._transport = SerialTransport(cfg.port, cfg.baudrate)
        self._poll = asyncio.create_task(self._watch(), name="printer-health")

    async def stop(self) -> None:
        task, self._poll = self._poll, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            # Bounded: a worker stuck in a write to a hung printer must not hold the daemon's stop.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await asyncio.get_running_loop().run_in_executor(self._executor, self._transport.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.simulator is not None:
            await asyncio.to_thread(self.simulator.stop)
            self.simulator = None

    # --- what the appliance calls ----------------------------------------------------------------

    async def check(self) -> Health:
        """Ask the printer its status now and update health."""
        try:
            status = await self._bounded(self._status_blocking, self.config.status_timeout_s * 4 + 1)
        except e.PrinterError as exc:
            self._set_health_for(exc)
        else:
            self._set_health_for(problem_of(status), status)
        return self._health

    async def print_receipt(
        self, receipt: Receipt, *, job: str = "receipt", session_id: str | None = None
    ) -> dict[str, Any]:
        """Print one receipt; ``PrinterError`` (after ``printer.failed``) when it did not come out."""
        data = build_receipt(
            receipt, paper_dots=self.config.paper_dots, qr_module_dots=self.config.qr_module_dots
        )
        try:
            async with self._job_lock:
                status = await self._bounded(lambda: self._print_blocking(data), self.config.print_timeout_s)
        except e.PrinterError as exc:
            self._set_health_for(exc)
            await self._send(
                "printer.failed",
                {
                    "printer": self.name,
                    "job": job,
                    "session_id": session_id,
                    "code": exc.code,
                    "error": exc.message,
                },
            )
            raise
        self._set_health_for(None, status)
        await self._send(
            "printer.printed",
            {"printer": self.name, "job": job, "session_id": session_id, "bytes": len(data)},
        )
        return {"printer": self.name, "bytes": len(data), "paper_near_end": status.paper_near_end}

    # --- worker thread ---------------------------------------------------------------------------

    async def _bounded(self, fn: Any, limit_s: float) -> Any:
        loop = asyncio.get_running_loop()
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
        # the job finishes, and stop() would then wait forever for the health task.
        try:
            async with asyncio.timeout(limit_s):
                return await loop.run_in_executor(self._executor, fn)
        except e.PrinterError:
            raise  # PrinterOffline is a TimeoutError too: the printer's own answer, keep it
        except TimeoutError:
            raise e.PrinterOffline(
                f"the receipt printer on {self.port} did not finish within {limit_s:g} s: "
                "check that it is switched on and its paper is not jammed"
            ) from None

    def _io(self) -> Transport:
        if self._transport is None:
            raise e.PrinterMissing("the receipt printer driver has not been started")
        return self._transport

    def _status_blocking(self) -> PrinterStatus:
        t = self._io()
        try:
            t.open()
            t.discard_input()
            answers: dict[int, int] = {}
            for n in (1, 2, 4):
                t.write(status_request(n))
                reply = t.read_some(self.config.status_timeout_s)
                if not reply:
                    raise e.PrinterOffline(
                        f"the receipt printer on {self.port} does not answer: check that it is switched "
                        "on, its cable, and the baud rate ([drivers.printer] baudrate)"
                    )
                answers[n] = reply[-1]  # the newest byte: a late answer to an earlier request comes first
            status = PrinterStatus.from_answers(answers)
        except e.PrinterMissing:
            t.close()
            raise
        self.last_status = status
        return status

    def _print_blocking(self, data: bytes) -> PrinterStatus:
        problem = problem_of(self._status_blocking())
        if problem is not None:
            raise problem
        self._io().write(data)
        after = self._status_blocking()
        problem = problem_of(after)
        if problem is not None:
            raise problem  # the roll ended or the cover opened during this receipt
        return after

    # --- health ----------------------------------------------------------------------------------

    def _set_health_for(self, exc: e.PrinterError | None, status: PrinterStatus | None = None) -> None:
        if exc is None:
            if status is not None and status.paper_near_end:
                new = Health(
                    HealthStatus.DEGRADED, "the receipt printer's paper is running low: fit a new roll soon"
                )
            else:
                new = Health(HealthStatus.OK, f"receipt printer on {self.port}")
        elif isinstance(exc, (e.PrinterMissing, e.PrinterOffline, e.UsbUnavailable)):
            new = Health(
                HealthStatus.DEGRADED if isinstance(exc, e.UsbUnavailable) else HealthStatus.MISSING,
                exc.message,
            )
        else:
            new = Health(HealthStatus.DEGRADED, exc.message)
        if (new.status, new.reason) != (self._health.status, self._health.reason):
            self._health = new

    async def _send(self, type: str, data: dict[str, Any]) -> None:
        if self._emit is None:
            return
        try:
            await self._emit(type, data)
        except Exception as exc:  # noqa: BLE001 - an unrecorded event must not fail the print job
            log.warning("printer: could not record %s: %r", type, exc)

    async def _watch(self) -> None:
        while True:
            if not self._job_lock.locked():
                await self.check()
            await asyncio.sleep(self.config.poll_interval_s)
