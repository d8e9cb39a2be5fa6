"""A poor village link in user space, for kernels without ``tc netem`` (this machine's among them).

``ImpairedLink(village, county)`` joins two namespaces through a third one, the "router": a veth pair
from each side ends there, and a thread moves Ethernet frames between the two router-side interfaces
through ``AF_PACKET`` sockets (the router has no addresses and does not forward by itself). On the way
each direction gets what netem would give it:

- ``delay_ms`` one way (so ``delay_ms=150`` is a 300 ms round trip), plus optional uniform ``jitter_ms``
  (frames keep their order, as on one path);
- ``loss_pct`` random loss per direction, per frame;
- ``rate_kbit`` serialisation per direction, with a drop-tail queue of ``queue_ms`` at that rate
  (a router's buffer: beyond it frames are dropped, so a sender that overshoots sees loss and delay);
- ``cut()`` drops everything (the village link is gone while the kiosk's interface stays up, as on a
  real drop), ``restore()`` lets frames through again.

Both sides see a plain Ethernet segment (``addr_a`` and ``addr_b`` in one subnet); ARP crosses the
bridge like everything else. Counters say what was forwarded and dropped.
"""

from __future__ import annotations

import heapq
import itertools
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from sim.netns import NetNs

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_counter = itertools.count(1)


@dataclass
class Direction:
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    rate_bps: float = 0.0  # 0 = unlimited
    queue_s: float = 0.3
    busy_until: float = 0.0  # when the last queued frame has left the "wire"
    last_due: float = 0.0
    forwarded: int = 0
    lost: int = 0
    overflow: int = 0
    bytes: int = 0


@dataclass(order=True)
class _Frame:
    due: float
    n: int
    out: socket.socket = field(compare=False)
    data: bytes = field(compare=False)


class ImpairedLink:
    def __init__(
        self, a: NetNs, b: NetNs, addr_a: str = "10.77.0.1/24", addr_b: str = "10.77.0.2/24", *, seed: int = 1
    ) -> None:
        self.a, self.b = a, b
        self.router = NetNs.create("krtr")
        n = next(_counter)
        self.a_if, self.ra_if, self.b_if, self.rb_if = f"kb{n}a", f"kb{n}ra", f"kb{n}b", f"kb{n}rb"
        import ipaddress

        self.addr_a = str(ipaddress.ip_interface(addr_a).ip)
        self.addr_b = str(ipaddress.ip_interface(addr_b).ip)
        r = self.router
        try:
            r.ip("link", "add", self.ra_if, "type", "veth", "peer", "name", self.a_if, "netns", a.name)
            r.ip("link", "add", self.rb_if, "type", "veth", "peer", "name", self.b_if, "netns", b.name)
            a.ip("addr", "add", addr_a, "dev", self.a_if)
            b.ip("addr", "add", addr_b, "dev", self.b_if)
            for ns, ifname in ((a, self.a_if), (b, self.b_if), (r, self.ra_if), (r, self.rb_if)):
                ns.ip("link", "set", ifname, "up")
            for ifname in (self.ra_if, self.rb_if):
                r.ip("link", "set", ifname, "promisc", "on")
            with r.entered():
                self._sa = _packet_socket(self.ra_if)
                self._sb = _packet_socket(self.rb_if)
        except BaseException:
            self.router.close()
            raise
        self.a_to_b, self.b_to_a = Direction(), Direction()
        self._dirs = {self._sa.fileno(): (self.a_to_b, self._sb), self._sb.fileno(): (self.b_to_a, self._sa)}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queue: list[_Frame] = []
        self._n = itertools.count()
        self._cut = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impaired-link", daemon=True)
        self._thread.start()

    # --- shaping -----------------------------------------------------------------------------------

    def netem(
        self,
        delay_ms: float,
        loss_pct: float,
        rate_kbit: float,
        jitter_ms: float = 0.0,
        queue_ms: float = 300,
    ) -> None:
        """The same shaping on both directions (as ``tc ... netem delay loss rate`` on both ends)."""
        with self._lock:
            for d in (self.a_to_b, self.b_to_a):
                d.delay_s, d.jitter_s = delay_ms / 1000, jitter_ms / 1000
                d.loss, d.rate_bps, d.queue_s = loss_pct / 100, rate_kbit * 1000, queue_ms / 1000

    def clear(self) -> None:
        self.netem(0, 0, 0)

    def cut(self) -> None:
        """Every frame is dropped from now on (and those in flight)."""
        with self._lock:
            self._cut = True
            self._queue.clear()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    @property
    def is_cut(self) -> bool:
        return self._cut

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            name: {"forwarded": d.forwarded, "lost": d.lost, "overflow": d.overflow, "bytes": d.bytes}
            for name, d in (("a_to_b", self.a_to_b), ("b_to_a", self.b_to_a))
        }

    # --- the bridge ----------------------------------------------------------------------------------

    def _run(self) -> None:
        socks = [self._sa, self._sb]
        while not self._stop.is_set():
            with self._lock:
                timeout = max(0.0, self._queue[0].due - time.monotonic()) if self._queue else 0.05
            ready, _, _ = select.select(socks, [], [], min(timeout, 0.05))
            now = time.monotonic()
            for s in ready:
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if addr[2] == PACKET_OUTGOING:  # what this bridge itself sent on that interface
                    continue
                self._admit(s, data, now)
            self._send_due(time.monotonic())

    def _admit(self, s: socket.socket, data: bytes, now: float) -> None:
        d, out = self._dirs[s.fileno()]
        with self._lock:
            if self._cut:
                d.lost += 1
                return
            if d.loss and self._rng.random() < d.loss:
                d.lost += 1
                return
            start = max(now, d.busy_until)
            if d.rate_bps:
                if start - now > d.queue_s:  # the router's buffer is full: drop tail
                    d.overflow += 1
                    return
                d.busy_until = start + len(data) * 8 / d.rate_bps
            else:
                d.busy_until = start
            due = d.busy_until + d.delay_s + (self._rng.uniform(0, d.jitter_s) if d.jitter_s else 0.0)
            due = max(due, d.last_due)  # one path: no reordering
            d.last_due = due
            heapq.heappush(self._queue, _Frame(due, next(self._n), out, data))

    def _send_due(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._queue or self._queue[0].due > now:
                    return
                frame = heapq.heappop(self._queue)
            try:
                frame.out.send(frame.data)
            except OSError:
                continue
            d = self.a_to_b if frame.out is self._sb else self.b_to_a
            d.forwarded += 1
            d.bytes += len(frame.data)

    def close(self) -> None:
        """Stop the bridge and delete the router namespace (its veth pairs go with it). Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        for s in (self._sa, self._sb):
            s.close()
        self.router.close()

    def __enter__(self) -> ImpairedLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setblocking(False)
    return s
