"""``Switcher``: the HDMI/AV matrix as a peripheral. Every route is read back before it counts.

One task owns the connection: it connects with capped, jittered backoff, identifies the switcher (its
size, when the protocol tells), checks it while idle and reconnects after an unplug. ``route()``
serialises with it on a lock, retries with backoff and turns every failure into a ``SwitcherError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from drivers.base import EventSink, Peripheral
from drivers.switcher.ascii_profile import AsciiMatrix
from drivers.switcher.config import SwitcherConfig
from drivers.switcher.errors import (
    RouteNotVerified,
    RouteOutOfRange,
    SwitcherError,
    SwitcherGarbage,
    SwitcherMissing,
    SwitcherRejected,
    SwitcherTimeout,
)
from drivers.switcher.extron import ExtronSis
from drivers.switcher.kramer import KramerP3000
from drivers.switcher.protocol import DeviceInfo, Layer, SwitcherProtocol, Tie, shorten
from drivers.switcher.simulator import SwitcherSimulator
from drivers.switcher.transport import LineTransport, SerialTransport, TcpTransport
from kiosk_core.backoff import equal_jitter
from kiosk_core.commands import CommandSpec, Params, by_name
from kiosk_core.errors import BadRequest, CommandError, KioskError
from kiosk_core.health import Health, HealthStatus
from kiosk_core.supervisor import DeviceSupervisor, supervise, wait_or_wake

log = logging.getLogger("kiosk.drivers.switcher")

T = TypeVar("T")
# Unsolicited lines tolerated while waiting for one answer (banners, front-panel reports).
MAX_SKIPPED_LINES = 16
MAX_NUMBER = 999


def make_protocol(cfg: SwitcherConfig) -> SwitcherProtocol:
    if cfg.protocol == "extron":
        return ExtronSis(digits=cfg.digits or 2)
    if cfg.protocol == "kramer":
        return KramerP3000()
    return AsciiMatrix(cfg.ascii, digits=cfg.digits or 1)


async def cancel_and_wait(task: asyncio.Task[Any], limit_s: float = 5.0) -> None:
    """Cancel ``task`` and wait for it to end. On Python 3.11 ``wait_for`` can swallow a cancellation that
    lands as its inner wait completes, so the cancel is repeated until the task is really done."""
    deadline = time.monotonic() + limit_s
    while not task.done() and time.monotonic() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    if not task.done():
        log.error("%s did not stop within %.0f s", task.get_name(), limit_s)


class RouteParams(Params):
    input: int = Field(ge=0, le=MAX_NUMBER)
    output: int = Field(ge=1, le=MAX_NUMBER)
    video: bool = True
    audio: bool = True


class Switcher(Peripheral):
    kind = "switcher"

    def __init__(
        self,
        config: SwitcherConfig,
        *,
        name: str = "switcher",
        transport_factory: Callable[[], LineTransport] | None = None,
        sim_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.protocol = make_protocol(config)
        super().__init__(name, model=config.model or self.protocol.title, backend=config.backend)
        self._transport_factory = transport_factory
        self._sim_dir = sim_dir
        #: the simulator behind a ``backend = "sim"`` switcher (None for real hardware)
        self.simulator: SwitcherSimulator | None = None
        self._transport: LineTransport | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._emit: EventSink | None = None
        self._supervisor = DeviceSupervisor(
            name,
            base_s=config.backoff_s,
            cap_s=config.reconnect_cap_s,
            classify=self._classify,
            is_device_error=lambda exc: isinstance(exc, SwitcherError),
            logger=log,
        )
        self._lost_reason = ""  # why the connection went, for the supervisor's health
        self.info = DeviceInfo(inputs=config.inputs, outputs=config.outputs)
        self.last_route: dict[str, Any] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def _make_transport(self) -> LineTransport:
        if self._transport_factory is not None:
            return self._transport_factory()
        cfg = self.config
        if cfg.backend == "serial":
            return SerialTransport(str(cfg.port), cfg.baudrate)
        if cfg.backend == "sim":
            assert self.simulator is not None and self.simulator.tcp_port is not None
            return TcpTransport("127.0.0.1", self.simulator.tcp_port)
        return TcpTransport(cfg.host, cfg.tcp_port)

    async def start(self, emit: EventSink) -> None:
        self._emit = emit
        if self.config.backend == "sim" and self.simulator is None and self._transport_factory is None:
            self.simulator = SwitcherSimulator(
                self.config.protocol,
                inputs=self.config.inputs or 8,
                outputs=self.config.outputs or 4,
                digits=self.config.digits,
                profile=self.config.ascii,
                model=self.config.model or None,
                firmware=self.config.sim_firmware,
            )
            await self.simulator.start_tcp()
        if self._task is None:
            self._task = asyncio.create_task(
                supervise(self._supervisor, self._session, close=self._drop_connection, wake=self._wake),
                name=f"{self.name}-supervisor",
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self._drop_connection()
        if self.simulator is not None:
            await self.simulator.stop()
            self.simulator = None
        self._supervisor.reset("stopped")

    # --- health ------------------------------------------------------------------------------------

    def health(self) -> Health:
        return self._supervisor.health

    def _set_health(self, status: HealthStatus, reason: str) -> None:
        self._supervisor.set_health(status, reason)

    @property
    def where(self) -> str:
        return self._transport.where if self._transport else self.backend

    def inventory(self) -> dict[str, Any]:
        inv = super().inventory()
        inv.update(
            protocol=self.protocol.name,
            inputs=self.info.inputs,
            outputs=self.info.outputs,
            where=self.where,
            dialect=self.protocol.dialect,
        )
        return inv

    # --- connection --------------------------------------------------------------------------------

    def _lost(self, why: str) -> None:
        self._lost_reason = self._transport.missing(why).message if self._transport else why
        self._wake.set()

    async def _drop_connection(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()

    async def _connect(self) -> None:
        await self._drop_connection()
        self._lost_reason = ""
        transport = self._make_transport()
        self._transport = transport
        transport.on_lost = self._lost
        await transport.open(self.config.connect_timeout_s)
        advice = f'check protocol = "{self.protocol.name}" (and the baud rate on serial)'
        try:
            info = await self._identify()
        except SwitcherTimeout:
            raise SwitcherMissing(
                f"{transport.where} accepts the connection but gives no {self.protocol.title} "
                f"answer within {self.config.timeout_s:g} s: {advice}",
                device=self.name,
            ) from None
        except SwitcherGarbage as exc:
            raise SwitcherGarbage(
                f"{transport.where} answers, but not in {self.protocol.title}: {exc.message}; {advice}",
                device=self.name,
            ) from None
        self.info = DeviceInfo(
            model=info.model,
            inputs=self.config.inputs or info.inputs,
            outputs=self.config.outputs or info.outputs,
        )
        await self._learn()
        self._set_health(HealthStatus.OK, self._ok_reason())

    async def _learn(self) -> None:
        """Run the protocol's setup steps (set the verbose mode, find out which route commands the unit
        takes). A step the unit refuses or does not answer is not a fault: the next one of its topic is
        tried, and the protocol keeps its defaults when none is answered. A dropped link still raises."""
        self.protocol.forget()
        learned: set[str] = set()
        for step in self.protocol.setup_steps():
            if step.topic in learned:
                continue
            try:
                value = await self._exchange(step.command, step.parse)
            except (SwitcherRejected, SwitcherTimeout, SwitcherGarbage) as exc:
                log.info(
                    "%s: %s not taken (%s): %s", self.name, shorten(step.command), step.topic, exc.message
                )
                continue
            self.protocol.learn(step.topic, value)
            learned.add(step.topic)
        if learned:
            log.info("%s: learned %s", self.name, self.protocol.dialect)

    def _ok_reason(self) -> str:
        size = f" ({self.info.inputs}x{self.info.outputs})" if self.info.inputs and self.info.outputs else ""
        return f"{self.protocol.title} switcher at {self.where}{size}"

    async def _identify(self) -> DeviceInfo:
        command = self.protocol.identify_command()
        if command is None:  # the profile has no identify: reading one output proves it speaks
            await self._exchange(
                self.protocol.query_command(1, Layer.VIDEO),
                lambda line: self.protocol.parse_query_reply(line, 1, Layer.VIDEO),
            )
            return DeviceInfo()
        return await self._exchange(command, self.protocol.parse_identify)

    async def _exchange(self, command: bytes, parse: Callable[[bytes], T | None]) -> T:
        """Send one command and return the first reply line ``parse`` recognises (it returns None for
        unsolicited lines, which are skipped, and raises for errors and garbage)."""
        transport = self._transport
        if transport is None or not transport.is_open:
            raise SwitcherMissing(f"switcher at {self.where} is not connected", device=self.name)
        # A late answer to an earlier, timed-out command must not be taken for this one's.
        transport.discard_input()
        await transport.write(command)
        deadline = time.monotonic() + self.config.timeout_s
        for _ in range(MAX_SKIPPED_LINES):
            try:
                line = await transport.read_line(max(0.0, deadline - time.monotonic()))
            except SwitcherTimeout:
                # The link stays open: a late reply is discarded by the next exchange, and a switcher
                # that stays silent is re-opened by the idle check in _session.
                raise SwitcherTimeout(
                    f"no reply from the switcher at {transport.where} within "
                    f"{self.config.timeout_s:g} s to {shorten(command)}: {transport.hint}",
                    device=self.name,
                ) from None
            result = parse(line)
            if result is not None and result is not False:
                return result
        raise SwitcherGarbage(
            f"switcher at {self.where} sent {MAX_SKIPPED_LINES} lines, none an answer to {command!r}",
            device=self.name,
        )

    async def _session(self) -> None:
        """One connection: open and identify the switcher (unless ``route()`` just did), then check it
        while idle. Raises when it fails or the connection drops."""
        if self._transport is None or not self._transport.is_open:
            async with self._lock:
                await self._connect()
        self._set_health(HealthStatus.OK, self._ok_reason())
        while True:
            self._wake.clear()
            if self._transport is None or not self._transport.is_open:
                raise SwitcherMissing(self._lost_reason or f"switcher at {self.where}: connection lost")
            woke = await wait_or_wake(self.config.poll_interval_s, self._wake)
            if woke or self._lock.locked():
                continue
            async with self._lock:
                await self._identify()
            self._set_health(HealthStatus.OK, self._ok_reason())

    def _classify(self, exc: Exception, serving: bool) -> Health:
        if not isinstance(exc, SwitcherError):
            where = "in the idle check" if serving else "while connecting"
            return Health(HealthStatus.DEGRADED, f"driver fault {where}: {exc!r}")
        if serving:  # the switcher had answered: only a vanished link makes it missing
            if isinstance(exc, SwitcherMissing):
                return Health(HealthStatus.MISSING, exc.message)
            return Health(HealthStatus.DEGRADED, f"idle check failed: {exc.message}")
        # Not there or silent: missing. There but talking nonsense: degraded.
        missing = isinstance(exc, SwitcherMissing | SwitcherTimeout)
        return Health(HealthStatus.MISSING if missing else HealthStatus.DEGRADED, exc.message)

    # --- routing -----------------------------------------------------------------------------------

    def _check_range(self, tie: Tie) -> None:
        n_in, n_out = self.info.inputs, self.info.outputs
        if not 0 <= tie.input <= (n_in or MAX_NUMBER):
            raise RouteOutOfRange(
                f"input {tie.input} does not exist: this switcher has inputs 1-{n_in}", device=self.name
            )
        if not 1 <= tie.output <= (n_out or MAX_NUMBER):
            raise RouteOutOfRange(
                f"output {tie.output} does not exist: this switcher has outputs 1-{n_out}", device=self.name
            )

    async def route(
        self, input: int, output: int, *, video: bool = True, audio: bool = True
    ) -> dict[str, Any]:
        """Show ``input`` on ``output`` (0 unties) and prove it by reading the routing back.

        Returns ``{"input", "output", "video", "audio", "attempts"}``. Raises ``RouteOutOfRange``
        before sending anything, ``SwitcherRejected`` at once for a non-retryable device error, and
        after ``config.retries`` attempts the last ``SwitcherTimeout`` / ``SwitcherGarbage`` /
        ``SwitcherMissing`` / ``RouteNotVerified``.
        """
        tie = Tie(input, output, Layer.of(video=video, audio=audio))
        self._check_range(tie)
        last: SwitcherError | None = None
        relearned = False
        for attempt in range(1, self.config.retries + 1):
            if attempt > 1:
                await asyncio.sleep(
                    equal_jitter(attempt - 2, self.config.backoff_s, self.config.reconnect_cap_s)
                )
            try:
                async with self._lock:
                    if self._transport is None or not self._transport.is_open:
                        await self._connect()
                    try:
                        await self._tie_and_verify(tie)
                    except SwitcherRejected as exc:
                        # "Not a command of mine" to a route that worked at connect: the unit was
                        # swapped or re-flashed behind a serial cable that never dropped. Learn it
                        # again, once per route, and try at once.
                        if not exc.unsupported or relearned:
                            raise
                        relearned = True
                        log.warning("%s: %s; learning the switcher's commands again", self.name, exc.message)
                        await self._learn()
                        await self._tie_and_verify(tie)
            except SwitcherRejected as exc:
                last = exc
                if not exc.retryable:
                    if not exc.bad_parameter:
                        self._set_health(HealthStatus.DEGRADED, exc.message)
                    await self._note_failure(tie, exc, attempt)
                    raise
            except SwitcherMissing as exc:
                last = exc
                self._set_health(HealthStatus.MISSING, exc.message)
                await self._drop_connection()
                self._lost_reason = exc.message
                self._wake.set()
            except SwitcherError as exc:
                last = exc
                log.info(
                    "%s: attempt %d/%d to route %d->%d failed: %s",
                    self.name,
                    attempt,
                    self.config.retries,
                    input,
                    output,
                    exc.message,
                )
            else:
                result = {
                    "input": input,
                    "output": output,
                    "video": video,
                    "audio": audio,
                    "attempts": attempt,
                }
                self.last_route = result
                self._set_health(HealthStatus.OK, self._ok_reason())
                await self._send_event("switcher.routed", result)
                return result
        assert last is not None
        if not isinstance(last, SwitcherMissing):
            self._set_health(HealthStatus.DEGRADED, f"route {input}->{output} failed: {last.message}")
        await self._note_failure(tie, last, self.config.retries)
        raise last

    async def read_tie(self, output: int = 1, *, layer: Layer = Layer.VIDEO) -> int:
        """Which input ``output`` shows now on ``layer`` (0: none): a read-only routing query, as the
        hardware self-test uses to prove the switcher answers in its protocol. Connects first when
        needed; raises ``SwitcherMissing`` / ``SwitcherTimeout`` / ``SwitcherGarbage`` like ``route``."""
        self._check_range(Tie(0, output, layer))
        async with self._lock:
            if self._transport is None or not self._transport.is_open:
                await self._connect()
            return await self._exchange(
                self.protocol.query_command(output, layer),
                lambda line: self.protocol.parse_query_reply(line, output, layer),
            )

    async def _tie_and_verify(self, tie: Tie) -> None:
        """Send the tie (one command per layer where the dialect needs it), then read back every layer
        it changed. Call with the lock held."""
        for part in self.protocol.route_ties(tie):
            await self._exchange(
                self.protocol.route_command(part),
                lambda line, part=part: self.protocol.parse_route_reply(line, part),
            )
        for plane in tie.layer.planes:
            got = await self._exchange(
                self.protocol.query_command(tie.output, plane),
                lambda line, p=plane: self.protocol.parse_query_reply(line, tie.output, p),
            )
            if got != tie.input:
                raise RouteNotVerified(
                    f"switcher at {self.where} acknowledged input {tie.input} -> output {tie.output} but "
                    f"reads back input {got} on the {plane} layer",
                    device=self.name,
                )

    async def _note_failure(self, tie: Tie, exc: SwitcherError, attempts: int) -> None:
        await self._send_event(
            "switcher.failed",
            {
                "input": tie.input,
                "output": tie.output,
                "layer": str(tie.layer),
                "code": exc.code,
                "error": exc.message,
                "attempts": attempts,
            },
        )

    async def _send_event(self, type: str, data: dict[str, Any]) -> None:
        if self._emit is None:
            return
        try:
            await self._emit(type, data)
        except KioskError as exc:  # an outbox problem must not turn a good route into a failure
            log.error("%s: could not record %s: %s", self.name, type, exc)

    # --- platform commands -------------------------------------------------------------------------

    def commands(self) -> Mapping[str, CommandSpec]:
        return by_name(
            CommandSpec(
                name="switcher.route",
                summary="route an input to an output (0 unties), read back before it counts",
                params=RouteParams,
                handler=self.route_command,
                personal=False,
                process="appliance",
            )
        )

    async def route_command(self, params: RouteParams) -> dict[str, Any]:
        """``switcher.route {input, output, video?, audio?}`` with 400 for bad params, 503 when the
        switcher cannot be reached, 500 when it answers wrong."""
        name = "switcher.route"
        n_in, n_out = self.info.inputs, self.info.outputs
        input_, output, video, audio = params.input, params.output, params.video, params.audio
        # The model checks types; how many inputs and outputs there are is the fitted switcher's.
        if n_in and input_ > n_in:
            raise BadRequest(
                f"{name}: input must be an integer 0-{n_in} (this switcher has {n_in} inputs; 0 unties), "
                f"got {input_}",
                field="input",
            )
        if n_out and output > n_out:
            raise BadRequest(
                f"{name}: output must be an integer 1-{n_out} (this switcher has {n_out} outputs), got {output}",
                field="output",
            )
        if not (video or audio):
            raise BadRequest(f"{name}: at least one of video and audio must be true", field="video")
        try:
            return await self.route(input_, output, video=video, audio=audio)
        except RouteOutOfRange as exc:
            raise BadRequest(f"{name}: {exc.message}", code=exc.code) from None
        except SwitcherRejected as exc:
            status = 400 if exc.bad_parameter else 500
            raise CommandError(
                status, f"{name}: {exc.message}", code=exc.code, device_code=exc.device_code
            ) from None
        except (SwitcherMissing, SwitcherTimeout) as exc:
            raise CommandError(503, f"{name}: {exc.message}", code=exc.code) from None
        except SwitcherError as exc:
            raise CommandError(500, f"{name}: {exc.message}", code=exc.code) from None
