"""The arbiter's lease decisions as a pure state machine (valid MicroPython; no I/O, no clock).

The hardware layer (``board.py``) feeds it observations stamped with ``now_ms`` (a monotonic
millisecond count; on the board ``time.ticks_ms()`` unwrapped by the caller) and carries out the
actions ``tick()`` returns, in order:

==========================  ==================================================================
``("pulse", t)``            toggle ``lease.t`` once (the holder's pulses, every ``pulse_ms``)
``("fence", t, 1|0)``       assert / release ``fence.t`` (the relay cutting t's output)
``("route", input, out)``   tie ``input`` to ``out`` on the switcher (SIS ``1*1!``)
``("untie", out)``          untie ``out`` (SIS ``0*1!``)
``("read_tie", out)``       read which input ``out`` shows (SIS ``1%``); answer with ``tie_read``
``("event", dict)``         a lease log record / report: ``{"event", "grant", "holder", "reason"}``
==========================  ==================================================================

Rules (docs/failover.md): t is *alive* while its last heartbeat edge is within ``detect_ms`` and
came within ``detect_ms`` of the one before; the holder loses the lease when it is not alive, or when the switcher reports its input
without signal for ``detect_ms``; a revoke stops the pulses at t_r and nobody is granted before
t_r + lease_ms + guard_ms; a live holder is never moved; at boot the lines stay idle for
lease_ms + guard_ms, then the switcher's tie says who was active (at a cold start, tied to neither, the
preferred terminal has ``settle_ms`` to come alive before the other is granted).
"""

BOOT = "boot"  # lines idle, waiting lease_ms + guard_ms
READING = "reading"  # asked the switcher which input the room output shows
RUN = "run"

DEFAULTS = {
    "terminals": {"main": 1, "backup": 2},  # terminal -> its switcher input
    "output": 1,
    "pulse_ms": 50,
    "lease_ms": 200,
    "guard_ms": 100,
    "detect_ms": 400,
    "tie_timeout_ms": 500,
    "prefer": "main",
    # Cold start (the switcher showed neither terminal): the preferred terminal has this long after
    # the boot wait to come alive before the other one is granted (the two boot in either order).
    "settle_ms": 3000,
}


class Arbiter:
    """Who holds the lease. Feed ``hb_edge``/``signal``/``tie_read``/``command``, call ``tick``."""

    def __init__(self, config=None):
        cfg = dict(DEFAULTS)
        if config:
            cfg.update(config)
        self.terminals = dict(cfg["terminals"])
        self.names = sorted(self.terminals)
        self.output = cfg["output"]
        self.pulse_ms = cfg["pulse_ms"]
        self.lease_ms = cfg["lease_ms"]
        self.guard_ms = cfg["guard_ms"]
        self.detect_ms = cfg["detect_ms"]
        self.tie_timeout_ms = cfg["tie_timeout_ms"]
        self.prefer = cfg["prefer"]
        self.settle_ms = cfg["settle_ms"]
        self.settle_until = 0  # ms: at a cold start, only the preferred terminal is granted before it
        if self.prefer is not None and self.prefer not in self.terminals:
            raise ValueError("prefer must be one of the terminals or None")
        self.phase = BOOT
        self.booted_at = None
        self.read_at = None
        self.holder = None
        self.grant = 0
        self.tied = None  # the terminal the switcher showed at boot
        self.no_grant_before = 0  # ms: t_r + lease + guard of the last revoke (or boot)
        self.next_pulse = 0
        self.edges = {}  # terminal -> (previous edge ms, last edge ms)
        self.no_signal_since = {}  # input -> ms the switcher first reported it without signal
        self.fenced = {}
        self._out = []

    # --- observations -------------------------------------------------------------------------------

    def hb_edge(self, terminal, now_ms):
        """A level change seen on ``hb.terminal``."""
        last = self.edges.get(terminal)
        self.edges[terminal] = (last[1] if last else None, now_ms)

    def signal(self, present, now_ms):
        """A switcher ``Sig`` report: ``present[i]`` for input i + 1."""
        for i, on in enumerate(present):
            n = i + 1
            if on:
                self.no_signal_since.pop(n, None)
            elif n not in self.no_signal_since:
                self.no_signal_since[n] = now_ms

    def tie_read(self, input, now_ms):
        """The answer to ``read_tie``: the input the room output shows (0 or None: untied / no answer)."""
        if self.phase != READING:
            return
        self.tied = None
        for name, n in self.terminals.items():
            if n == input:
                self.tied = name
        self._out.append(("event", self._record("tie", self.tied, f"switcher shows input {input}")))
        if self.tied is None:
            self.settle_until = now_ms + self.settle_ms
        self.phase = RUN

    def command(self, name, arg=None):
        """Operator commands: ``("prefer", terminal|None)``."""
        if name == "prefer":
            if arg is not None and arg not in self.terminals:
                raise ValueError(f"unknown terminal {arg!r}")
            self.prefer = arg
            return
        raise ValueError(f"unknown command {name!r}")

    # --- judgement ----------------------------------------------------------------------------------

    def alive(self, terminal, now_ms):
        e = self.edges.get(terminal)
        # Two edges no farther apart than detect_ms, the last within detect_ms: one stray edge on a
        # dead line proves nothing, and a gap shorter than detect_ms (a glitch) changes nothing.
        return (
            e is not None
            and e[0] is not None
            and e[1] - e[0] < self.detect_ms
            and now_ms - e[1] < self.detect_ms
        )

    def signal_lost(self, terminal, now_ms):
        since = self.no_signal_since.get(self.terminals[terminal])
        return since is not None and now_ms - since >= self.detect_ms

    def healthy(self, terminal, now_ms):
        return self.alive(terminal, now_ms) and not self.signal_lost(terminal, now_ms)

    def _record(self, event, holder, reason):
        return {"event": event, "grant": self.grant, "holder": holder, "reason": reason}

    # --- the step -----------------------------------------------------------------------------------

    def tick(self, now_ms):
        """Decide at ``now_ms``; returns the actions to carry out now, in order."""
        out = self._out
        self._out = []
        if self.phase == BOOT:
            if self.booted_at is None:
                self.booted_at = now_ms
                self.no_grant_before = now_ms + self.lease_ms + self.guard_ms
                out.append(("event", self._record("boot", None, "start")))
            if now_ms >= self.no_grant_before:
                self.phase = READING
                self.read_at = now_ms
                out.append(("read_tie", self.output))
            return out
        if self.phase == READING:
            if now_ms - self.read_at >= self.tie_timeout_ms:
                self.tie_read(None, now_ms)
                out.extend(self._out)
                self._out = []
            else:
                return out
        if self.holder is not None:
            h = self.holder
            if not self.alive(h, now_ms):
                self._revoke(out, now_ms, "heartbeat_lost")
            elif self.signal_lost(h, now_ms):
                self._revoke(out, now_ms, "signal_lost")
        if self.holder is None and now_ms >= self.no_grant_before:
            pick = self._pick(now_ms)
            if pick is not None:
                self._grant(out, pick, now_ms)
        if self.holder is not None and now_ms >= self.next_pulse:
            out.append(("pulse", self.holder))
            self.next_pulse += self.pulse_ms
            if self.next_pulse <= now_ms:  # the loop was late: no burst of pulses to catch up
                self.next_pulse = now_ms + self.pulse_ms
        return out

    def _pick(self, now_ms):
        live = [t for t in self.names if self.healthy(t, now_ms)]
        if not live:
            return None
        for t in (self.tied, self.prefer):
            if t in live:
                return t
        if self.grant == 0 and self.prefer is not None and now_ms < self.settle_until:
            return None  # a cold start: the preferred terminal may still be booting
        return live[0]

    def _grant(self, out, terminal, now_ms):
        self.grant += 1
        self.holder = terminal
        reason = "boot_tie" if terminal == self.tied and self.grant == 1 else "granted"
        self.tied = None  # the boot hint counts once
        out.append(("event", self._record("grant", terminal, reason)))
        out.append(("pulse", terminal))
        self.next_pulse = now_ms + self.pulse_ms
        if self.fenced.get(terminal):
            self.fenced[terminal] = 0
            out.append(("fence", terminal, 0))
        out.append(("route", self.terminals[terminal], self.output))

    def _revoke(self, out, now_ms, reason):
        h = self.holder
        out.append(("event", self._record("revoke", h, reason)))
        self.holder = None
        self.no_grant_before = now_ms + self.lease_ms + self.guard_ms
        self.fenced[h] = 1
        out.append(("fence", h, 1))
        out.append(("untie", self.output))

    def status(self, now_ms):
        """A JSON-able picture for reports."""
        return {
            "phase": self.phase,
            "holder": self.holder,
            "grant": self.grant,
            "prefer": self.prefer,
            "terminals": {
                t: {
                    "alive": self.alive(t, now_ms),
                    "signal": not self.signal_lost(t, now_ms),
                    "fenced": bool(self.fenced.get(t)),
                }
                for t in self.names
            },
        }
