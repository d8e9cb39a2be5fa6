"""The arbiter's hardware layer (valid MicroPython): pins, the switcher's UART, the watchdog, MQTT.

Thin on purpose: every decision is ``lease.Arbiter``'s. ``Controller.step()`` is one tick: sample
the heartbeat lines, read what the switcher said, let the arbiter decide, carry out its actions, feed
the watchdog, then give the MQTT reporter a bounded slice. Nothing here blocks longer than the
socket timeout (``mqtt.timeout_ms``, 20 ms), so a dead broker never stalls the lease pulses.

On the board the modules come from MicroPython (``machine``, ``network``, ``umqtt.simple``); on
CPython ``sim/micropython`` provides stand-ins with the same interfaces (``python -m sim.arbiter``).
"""

import json
import time

import machine

try:  # the repo's layout (CPython, tests)
    from drivers.failover_controller import lease
    from drivers.switcher import sis_wire
except ImportError:  # the board's: every file flat in /
    import lease
    import sis_wire


def load_config(path="config.json"):
    with open(path) as f:
        return json.load(f)


class Clock:
    """Milliseconds since boot from ``time.ticks_ms()``, unwrapped (ticks_ms wraps after ~12 days)."""

    def __init__(self):
        self._last = time.ticks_ms()
        self._ms = 0

    def now(self):
        t = time.ticks_ms()
        self._ms += time.ticks_diff(t, self._last)
        self._last = t
        return self._ms


class Lines:
    """The wires: ``hb.T`` inputs (pull-up), ``lease.T`` and ``fence.T`` outputs (start low)."""

    def __init__(self, pins):
        self.hb = {}
        self.level = {}
        self.lease = {}
        self.fence = {}
        for t, p in pins.items():
            self.hb[t] = machine.Pin(p["hb"], machine.Pin.IN, machine.Pin.PULL_UP)
            self.level[t] = self.hb[t].value()
            self.lease[t] = machine.Pin(p["lease"], machine.Pin.OUT, value=0)
            self.fence[t] = machine.Pin(p["fence"], machine.Pin.OUT, value=0)

    def edges(self):
        """The terminals whose heartbeat line changed since the last call."""
        out = []
        for t, pin in self.hb.items():
            v = pin.value()
            if v != self.level[t]:
                self.level[t] = v
                out.append(t)
        return out

    def pulse(self, t):
        pin = self.lease[t]
        pin.value(1 - pin.value())

    def set_fence(self, t, on):
        self.fence[t].value(1 if on else 0)


class Switcher:
    """The switcher on its UART, in SIS: verbose mode 3 at start, ties sent until the switcher
    confirms them (``Out01 In02 All``), ``Sig`` reports and the boot read-back passed on."""

    RETRY_MS = 300

    def __init__(self, uart, digits=2):
        self.uart = uart
        self.digits = digits
        self.lines = sis_wire.LineSplitter()
        self.want = None  # (input, output) not yet confirmed
        self.sent_at = None
        self.reading = None  # output whose read-back is awaited
        self.errors = 0
        self.last_error = None
        self._write(sis_wire.VERBOSE_COMMAND)

    def _write(self, data):
        try:
            self.uart.write(data)
        except OSError:
            self.errors += 1  # the port is gone for now: the retry resends

    def tie(self, input, output, now_ms):
        self.want = (input, output)
        self.sent_at = now_ms
        self._write(sis_wire.tie_command(input, output, self.digits))

    def read_tie(self, output):
        self.reading = output
        self._write(sis_wire.read_command(output, self.digits))

    def poll(self, arbiter, now_ms):
        try:
            data = self.uart.read() if self.uart.any() else None
        except OSError:
            data = None
        for text in self.lines.feed(data) if data else ():
            self._line(text, arbiter, now_ms)
        if self.want is not None and now_ms - self.sent_at >= self.RETRY_MS:
            self.tie(self.want[0], self.want[1], now_ms)

    def _line(self, text, arbiter, now_ms):
        sig = sis_wire.parse_sig(text)
        if sig is not None:
            arbiter.signal(sig, now_ms)
            return
        tie = sis_wire.parse_tie(text)
        if tie is not None:
            out, inp, word = tie
            if self.want is not None and (inp, out) == self.want and word == "All":
                self.want = None
            if self.reading == out and word in ("Vid", "RGB"):
                self.reading = None
                arbiter.tie_read(inp, now_ms)
            return
        n = sis_wire.parse_read(text)
        if n is not None and self.reading is not None:
            self.reading = None
            arbiter.tie_read(n, now_ms)
            return
        if sis_wire.parse_error(text):
            self.errors += 1
            self.last_error = text  # a refused tie is sent again after RETRY_MS


class Reporter:
    """MQTT reporting with umqtt.simple, under its own reconnect/backoff and a Will (``lost``).

    QoS 0 only: umqtt's QoS 1 publish waits for the PUBACK, which a stalled broker would turn into a
    stalled lease loop. The queue holds ``QUEUE`` messages; when full the oldest event is dropped
    (the retained state and status are re-sent on every connect anyway)."""

    QUEUE = 32

    def __init__(self, cfg, make_client, on_command=None):
        self.cfg = cfg
        self.base = "kiosk/v1/" + "/".join(cfg["region"]) + "/" + cfg["arbiter_id"]
        self.make_client = make_client
        self.on_command = on_command
        self.timeout_s = cfg.get("timeout_ms", 20) / 1000
        self.backoff_ms = cfg.get("backoff_ms", 500)
        self.backoff_cap_ms = cfg.get("backoff_cap_ms", 10000)
        self.keepalive_s = cfg.get("keepalive_s", 10)
        self.client = None
        self.next_try = 0
        self.delay = self.backoff_ms
        self.last_io = 0
        self.queue = []
        self.status = None
        self.connects = 0
        self.online = False
        self.phase = None  # None (no client), "subscribe", "online", "up"

    def event(self, record):
        if len(self.queue) >= self.QUEUE:
            self.queue.pop(0)
        msg = dict(record)
        msg["event"] = "failover.lease" if record["event"] in ("grant", "revoke") else record["event"]
        msg["kind"] = record["event"]
        self.queue.append((self.base + "/event", json.dumps(msg), False))

    def set_status(self, status):
        self.status = status

    def _drop(self, now_ms):
        if self.client is not None:
            try:
                self.client.sock.close()
            except Exception:  # noqa: BLE001 - the socket may be half made
                pass
        self.client = None
        self.online = False
        self.phase = None
        self.next_try = now_ms + self.delay
        self.delay = min(self.delay * 2, self.backoff_cap_ms)

    def _bound(self):
        # umqtt's wait_msg leaves the socket blocking; every call gets the short timeout back
        self.client.sock.settimeout(self.timeout_s)

    def _connect(self, now_ms):
        """Connect: one blocking exchange (CONNECT/CONNACK); the rest waits for the next steps."""
        c = self.make_client(
            self.cfg["arbiter_id"],
            self.cfg["host"],
            port=self.cfg.get("port", 1883),
            keepalive=self.keepalive_s,
        )
        c.set_last_will(self.base + "/state", json.dumps({"state": "lost"}), retain=True)
        c.set_callback(self._message)
        self.client = c
        self.phase = "subscribe"
        c.connect(timeout=self.timeout_s)
        self._bound()
        # umqtt writes a packet in several small writes; with Nagle on, the second one waits for the
        # broker's delayed ACK (40 ms), past our timeout. Where the socket can turn it off, it does.
        try:
            import socket

            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (ImportError, AttributeError, OSError):
            pass
        self.last_io = now_ms

    def _setup(self, now_ms):
        c = self.client
        if self.phase == "subscribe":
            c.subscribe(self.base + "/cmd/+")
            self.phase = "online"
        else:
            c.publish(self.base + "/state", json.dumps({"state": "online"}), retain=True)
            self.phase = "up"
            self.connects += 1
            self.online = True
            self.delay = self.backoff_ms
        self._bound()
        self.last_io = now_ms

    def _message(self, topic, msg):
        if self.on_command is None:
            return
        try:
            name = topic.decode().rsplit("/", 1)[-1]
            self.on_command(name, json.loads(msg) if msg else {})
        except (ValueError, KeyError, TypeError):
            pass  # a command we cannot read is not ours to act on

    def step(self, now_ms):
        """One bounded slice of MQTT work (at most one exchange that waits for the broker, each wait
        at most ``timeout_ms``): a connect, the subscribe, the ``online`` state, or one message out
        and a look at what came in."""
        try:
            if self.client is None:
                if now_ms >= self.next_try:
                    self._connect(now_ms)
                return
            c = self.client
            if self.phase != "up":
                self._setup(now_ms)
                return
            if self.queue:
                topic, payload, retain = self.queue.pop(0)
                c.publish(topic, payload, retain=retain)
                self.last_io = now_ms
            elif self.status is not None:
                c.publish(self.base + "/status", json.dumps(self.status), retain=True)
                self.status = None
                self.last_io = now_ms
            elif now_ms - self.last_io >= self.keepalive_s * 500:
                c.ping()
                self.last_io = now_ms
            c.check_msg()
            self._bound()
        except Exception:  # noqa: BLE001 - OSError, MQTTException, a torn packet: all mean reconnect
            self._drop(now_ms)


class Controller:
    """The arbiter on its board: ``step()`` once per tick (a few ms)."""

    def __init__(self, cfg, uart, wdt=None, make_client=None, on_event=None):
        self.cfg = cfg
        self.clock = Clock()
        self.arbiter = lease.Arbiter(cfg.get("lease"))
        self.lines = Lines(cfg["pins"])
        self.switcher = Switcher(uart, cfg.get("switcher", {}).get("digits", 2))
        self.wdt = wdt
        self.on_event = on_event
        mqtt = cfg.get("mqtt")
        self.reporter = None
        if make_client is not None and mqtt and mqtt.get("host"):
            self.reporter = Reporter(mqtt, make_client, self.command)
        self.status_every_ms = cfg.get("status_every_ms", 5000)
        self.next_status = 0

    def command(self, name, body):
        if name == "failover.prefer":
            self.arbiter.command("prefer", body.get("terminal"))
            self.next_status = 0

    def step(self):
        now = self.clock.now()
        for t in self.lines.edges():
            self.arbiter.hb_edge(t, now)
        self.switcher.poll(self.arbiter, now)
        for act in self.arbiter.tick(now):
            self.do(act, now)
        if self.wdt is not None:
            self.wdt.feed()
        if self.reporter is not None:
            if now >= self.next_status:
                self.reporter.set_status(self.arbiter.status(now))
                self.next_status = now + self.status_every_ms
            self.reporter.step(self.clock.now())

    def do(self, act, now):
        kind = act[0]
        if kind == "pulse":
            self.lines.pulse(act[1])
        elif kind == "event":
            if self.on_event is not None:
                self.on_event(act[1])
            if self.reporter is not None:
                self.reporter.event(act[1])
                self.next_status = 0
        elif kind == "fence":
            self.lines.set_fence(act[1], act[2])
        elif kind == "route":
            self.switcher.tie(act[1], act[2], now)
        elif kind == "untie":
            self.switcher.tie(0, act[1], now)
        elif kind == "read_tie":
            self.switcher.read_tie(act[1])
