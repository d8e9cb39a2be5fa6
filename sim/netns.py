"""Network namespaces for the call's tests and benchmarks (Linux, root, iproute2).

Why: Janus (libnice) never gathers ICE candidates on a loopback interface, aioice skips 127.0.0.1, and
Chromium refuses loopback candidates unless told otherwise. A test's own namespace with ``lo`` up and a
non-loopback link carrying 127.0.0.2/32 gives every WebRTC stack a usable host candidate without touching
the machine's network; two namespaces joined by a veth pair model the kiosk and the county.

Facts callers may rely on (Linux semantics, not this module's):

- a socket keeps the namespace it was created in, whichever thread later uses it;
- a thread or a subprocess inherits the namespace of the *thread* that creates it;
- so ``with ns.entered(): proc = subprocess.Popen(...)`` starts a process inside ``ns``, and a client
  whose sockets (and helper threads) are created inside the block lives there after the block ends.

``setns(2)`` moves only the calling thread: :meth:`NetNs.entered` switches the current thread in and back
out, other threads (asyncio's default executor, for one) stay where they were. Resolving numeric hosts
in those threads is harmless; creating sockets there is not.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import heapq
import ipaddress
import itertools
import json
import os
import random
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)
_libc = ctypes.CDLL(None, use_errno=True)
_NETNS_DIR = "/run/netns"


class NetNsError(RuntimeError):
    """An ``ip``/``tc`` command or ``setns(2)`` failed; the message carries the command and its stderr."""


class NetemUnavailable(NetNsError):
    """The kernel has no ``sch_netem`` qdisc (``tc`` answers "Specified qdisc kind is unknown")."""


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def _tc() -> str:
    return shutil.which("tc") or "/usr/sbin/tc"


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise NetNsError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetNsError(f"setns({path}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_available() -> str | None:
    """None if network namespaces can be used here, else a reason fit for ``pytest.skip``.

    Checks: running as root, ``ip`` present, and ``ip netns add``/``del`` actually work (a container
    without CAP_SYS_ADMIN fails only at that point).
    """
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if not (shutil.which("ip") or os.path.exists("/usr/sbin/ip")):
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    name = f"kprobe{os.getpid()}x{next(_counter)}"
    try:
        _run(_ip(), "netns", "add", name)
    except (NetNsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` does not work here: {exc}"
    with contextlib.suppress(NetNsError, OSError, subprocess.TimeoutExpired):
        _run(_ip(), "netns", "del", name)
    return None


class NetNs:
    """A named network namespace (``/run/netns/<name>``) owned by this process.

    Create with :meth:`create`; :meth:`close` (or leaving ``with``) deletes it, idempotently. Processes
    still running inside keep the namespace alive in the kernel after deletion, so stop them first.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = os.path.join(_NETNS_DIR, name)
        self._closed = False
        self._links = itertools.count(0)

    @classmethod
    def create(cls, prefix: str = "kcall") -> NetNs:
        """Make a uniquely named namespace (``<prefix><pid>n<counter>``) with ``lo`` up."""
        name = f"{prefix}{os.getpid()}n{next(_counter)}"
        _run(_ip(), "netns", "add", name)
        ns = cls(name)
        try:
            ns.ip("link", "set", "lo", "up")
        except BaseException:
            ns.close()
            raise
        return ns

    def ip(self, *args: str) -> str:
        """Run ``ip -n <name> ARGS`` and return its stdout (NetNsError on failure)."""
        # Run inside the namespace by setns on this thread, not `ip -n` / `ip netns exec`: those also
        # remount /sys in a private mount namespace, which fails where / is not a mount point (a
        # chroot, such as a fresh debootstrap root the tests are tried in).
        with self.entered():
            return _run(_ip(), *args)

    def tc(self, *args: str) -> str:
        """Run ``tc ARGS`` inside the namespace."""
        with self.entered():
            return _run(_tc(), *args)

    def add_address_link(self, addr: str = "127.0.0.2/32", *, name: str | None = None) -> str:
        """Add a non-loopback link inside the namespace carrying ``addr``; return the interface's name.

        A veth pair with both ends inside (this kernel may lack the ``dummy`` module); the address sits
        on the first end, which is what Janus's ``ice_enforce_list`` should name. Both ends are up.
        """
        n = next(self._links)
        ifname = name or f"kv{n}a"
        peer = f"{ifname[:-1]}b" if ifname.endswith("a") else f"{ifname}p"
        self.ip("link", "add", ifname, "type", "veth", "peer", "name", peer)
        self.ip("link", "set", ifname, "up")
        self.ip("link", "set", peer, "up")
        self.ip("addr", "add", addr, "dev", ifname)
        return ifname

    @contextlib.contextmanager
    def entered(self) -> Iterator[NetNs]:
        """Move the calling thread into this namespace for the block, then back to where it was.

        Sockets, threads and subprocesses created inside the block belong to the namespace for their
        whole life. Not reentrant across threads: each thread enters for itself.
        """
        if self._closed:
            raise NetNsError(f"namespace {self.name} is closed")
        # /proc/thread-self, not /proc/self: the latter is the thread group leader's namespace, which is
        # not ours if this thread had entered another namespace already.
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.path)
            try:
                yield self
            finally:
                if _libc.setns(original, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetNsError(f"could not return thread {threading.get_ident()}: {os.strerror(err)}")
        finally:
            os.close(original)

    def close(self) -> None:
        """Delete the namespace (idempotent). Its veth ends go with it."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(NetNsError, OSError, subprocess.TimeoutExpired):
            _run(_ip(), "netns", "del", self.name)

    def __enter__(self) -> NetNs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetNs({self.name!r})"


class VethLink:
    """A veth pair joining two namespaces: ``a_if`` in ``a`` (address ``addr_a``), ``b_if`` in ``b``.

    Impairment is applied on egress of each end, so each direction is shaped once: ``a``'s end shapes
    a → b traffic and ``b``'s end shapes b → a traffic.
    """

    def __init__(self, a: NetNs, b: NetNs, a_if: str, b_if: str, addr_a: str, addr_b: str) -> None:
        self.a, self.b = a, b
        self.a_if, self.b_if = a_if, b_if
        self.addr_a = str(ipaddress.ip_interface(addr_a).ip)
        self.addr_b = str(ipaddress.ip_interface(addr_b).ip)
        self._cut = False
        self._shaping: dict[str, float] | None = None

    def netem(self, delay_ms: float, loss_pct: float, rate_kbit: int, jitter_ms: float = 0) -> None:
        """Shape both directions with ``tc qdisc replace dev <end> root netem ...``.

        Each end gets the same qdisc: ``delay <delay_ms>ms [<jitter_ms>ms] loss <loss_pct>% rate
        <rate_kbit>kbit``; so the round trip adds ``2 × delay_ms``, loss is ``loss_pct`` per direction and
        each direction is limited to ``rate_kbit``. For "300 ms RTT" pass ``delay_ms=150``.
        Raises :class:`NetemUnavailable` when the kernel has no netem (see :func:`netem_available`).
        """
        args = ["delay", f"{delay_ms}ms"]
        if jitter_ms:
            args += [f"{jitter_ms}ms", "distribution", "normal"]
        args += ["loss", f"{loss_pct}%"]
        if rate_kbit:
            args += ["rate", f"{rate_kbit}kbit"]
        for ns, ifname in ((self.a, self.a_if), (self.b, self.b_if)):
            try:
                ns.tc("qdisc", "replace", "dev", ifname, "root", "netem", *args)
            except NetNsError as exc:
                if "unknown" in str(exc).lower():
                    raise NetemUnavailable(
                        f"the kernel has no netem qdisc (sch_netem): {exc}; load the module or use a kernel "
                        'built with CONFIG_NET_SCH_NETEM, or use link(kind="tap")'
                    ) from exc
                raise
        self._shaping = {
            "delay_ms": delay_ms,
            "loss_pct": loss_pct,
            "rate_kbit": rate_kbit,
            "jitter_ms": jitter_ms,
        }

    def clear(self) -> None:
        """Remove any shaping from both ends (no error if there was none)."""
        self._shaping = None
        for ns, ifname in ((self.a, self.a_if), (self.b, self.b_if)):
            with contextlib.suppress(NetNsError):
                ns.tc("qdisc", "del", "dev", ifname, "root")

    def cut(self) -> None:
        """Drop the link silently: 100 % loss both ways (netem), or both ends down without netem.

        A village link that drops is "100 % loss": the kiosk's own interface stays up and packets vanish,
        so only timeouts (ICE consent, Janus's keepalive) notice. That is what this does when the kernel
        has netem. Without netem (this machine's kernel has no netem, no tc drop action and no
        classifiers) it falls back to ``ip link set down`` on both ends: sends then fail at once with
        ENETUNREACH and the routes over the link go until :meth:`restore`, a harsher and earlier signal
        than a real drop. :class:`TapLink` always cuts silently; prefer it for reconnection tests.
        """
        if netem_available() is None:
            for ns, ifname in ((self.a, self.a_if), (self.b, self.b_if)):
                ns.tc("qdisc", "replace", "dev", ifname, "root", "netem", "loss", "100%")
            self._cut_by = "netem"
        else:
            self.a.ip("link", "set", self.a_if, "down")
            self.b.ip("link", "set", self.b_if, "down")
            self._cut_by = "down"
        self._cut = True

    def restore(self) -> None:
        """Undo :meth:`cut` (idempotent): the previous shaping comes back (none if there was none)."""
        if getattr(self, "_cut_by", None) == "netem":
            if self._shaping is not None:
                self.netem(**self._shaping)
            else:
                self.clear()
        self.a.ip("link", "set", self.a_if, "up")
        self.b.ip("link", "set", self.b_if, "up")
        self._cut = False

    @property
    def is_cut(self) -> bool:
        return self._cut


def link(
    a: NetNs, b: NetNs, addr_a: str = "10.77.0.1/24", addr_b: str = "10.77.0.2/24", *, kind: str = "auto"
) -> VethLink | TapLink:
    """Join ``a`` and ``b`` with a link carrying ``addr_a`` in ``a`` and ``addr_b`` in ``b``.

    ``kind``: "veth" (kernel veth pair, shaped by ``tc netem``), "tap" (:class:`TapLink`: two TAP
    devices and a userspace relay process that delays, drops and rate-limits), or "auto": veth when the
    kernel has netem, else tap. Both have the same ``netem/clear/cut/restore/close`` interface.
    """
    if kind == "auto":
        kind = "veth" if netem_available() is None else "tap"
    if kind == "tap":
        return TapLink(a, b, addr_a, addr_b)
    if kind != "veth":
        raise ValueError(f"link kind must be auto, veth or tap, not {kind!r}")
    n = next(_counter)
    a_if, b_if = f"kl{n}a", f"kl{n}b"
    a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    a.ip("addr", "add", addr_a, "dev", a_if)
    b.ip("addr", "add", addr_b, "dev", b_if)
    a.ip("link", "set", a_if, "up")
    b.ip("link", "set", b_if, "up")
    return VethLink(a, b, a_if, b_if, addr_a, addr_b)


@functools.cache
def netem_available() -> str | None:
    """None if ``tc ... netem`` works in a fresh namespace, else the reason (for ``pytest.skip``).

    Probed once per process (the kernel does not grow modules while we run).
    """
    reason = netns_available()
    if reason:
        return reason
    with NetNs.create("kprobe") as ns:
        ifname = ns.add_address_link("10.254.0.1/32")
        try:
            ns.tc("qdisc", "replace", "dev", ifname, "root", "netem", "delay", "1ms")
        except NetNsError as exc:
            return f"tc netem is not available on this kernel: {exc}"
    return None


# --- a userspace netem: two TAP devices and a relay process -----------------------------------------

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


@dataclass(frozen=True)
class Impairment:
    """What the relay does to each direction (the same both ways)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_kbit: int = 0
    queue_ms: float = 500.0
    cut: bool = False


def _open_tap(ns: NetNs, name: str) -> int:
    # The TAP device is created in the namespace of the thread that opens /dev/net/tun.
    with ns.entered():
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
    return fd


class TapLink:
    """A link between two namespaces through a userspace relay: netem's job without the kernel's netem.

    Each namespace gets a TAP device (``a_if``/``b_if``) with its address; a child process
    (``python -m sim.netns relay``) copies Ethernet frames between the two and applies, per direction,
    a bottleneck of ``rate_kbit`` (frames queue behind each other; a frame that would wait more than
    ``queue_ms`` is tail-dropped, like a router's buffer), random ``loss_pct``, and ``delay_ms`` ±
    ``jitter_ms`` (normal; frames stay in order, as on a cellular link). :meth:`cut` drops every
    frame silently (a village link that goes away: 100 % loss, interfaces stay up). Settings apply to
    frames that arrive after the call returns. Accuracy: well under a millisecond on an idle machine;
    meant for call-sized traffic (a few Mbit/s), not for throughput tests.
    """

    def __init__(self, a: NetNs, b: NetNs, addr_a: str, addr_b: str) -> None:
        n = next(_counter)
        self.a, self.b = a, b
        self.a_if, self.b_if = f"kt{n}a", f"kt{n}b"
        self.addr_a = str(ipaddress.ip_interface(addr_a).ip)
        self.addr_b = str(ipaddress.ip_interface(addr_b).ip)
        self._impairment = Impairment()
        self._shaping = Impairment()
        fd_a = _open_tap(a, self.a_if)
        fd_b = _open_tap(b, self.b_if)
        ctl, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sim.netns", "relay", str(fd_a), str(fd_b), str(child.fileno())],
                pass_fds=(fd_a, fd_b, child.fileno()),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
        finally:
            os.close(fd_a)
            os.close(fd_b)
            child.close()
        self._ctl = ctl
        self._ctl_file = ctl.makefile("rwb", buffering=0)
        for ns, ifname, addr in ((a, self.a_if, addr_a), (b, self.b_if, addr_b)):
            ns.ip("addr", "add", addr, "dev", ifname)
            ns.ip("link", "set", ifname, "up")
        self._send(self._impairment)

    def _send(self, imp: Impairment) -> None:
        self._ctl_file.write(json.dumps(asdict(imp)).encode() + b"\n")
        if self._ctl_file.readline().strip() != b"ok":
            raise NetNsError(f"the link relay (pid {self.proc.pid}) did not take the settings")
        self._impairment = imp

    def netem(
        self, delay_ms: float, loss_pct: float, rate_kbit: int, jitter_ms: float = 0, queue_ms: float = 500
    ) -> None:
        """Shape both directions alike: one-way ``delay_ms`` (RTT adds twice), ``loss_pct`` per
        direction, ``rate_kbit`` per direction (0 = unlimited). For "300 ms RTT" pass 150."""
        self._shaping = Impairment(delay_ms, jitter_ms, loss_pct, rate_kbit, queue_ms)
        self._send(Impairment(delay_ms, jitter_ms, loss_pct, rate_kbit, queue_ms, cut=self._impairment.cut))

    def clear(self) -> None:
        self._shaping = Impairment()
        self._send(Impairment(cut=self._impairment.cut))

    def cut(self) -> None:
        """Drop every frame both ways, silently (the interfaces stay up)."""
        self._send(Impairment(**{**asdict(self._shaping), "cut": True}))

    def restore(self) -> None:
        self._send(Impairment(**{**asdict(self._shaping), "cut": False}))

    @property
    def is_cut(self) -> bool:
        return self._impairment.cut

    def close(self) -> None:
        """Stop the relay (by pid); the TAP devices vanish with their file descriptors. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self._ctl.shutdown(socket.SHUT_RDWR)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._ctl_file.close()
            self._ctl.close()

    def __enter__(self) -> TapLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _relay(fd_a: int, fd_b: int, ctl_fd: int) -> None:
    """The relay process's loop (see :class:`TapLink`). Ends when the control socket closes."""
    ctl = socket.socket(fileno=ctl_fd)
    ctl_in = ctl.makefile("rb", buffering=0)
    imp = Impairment()
    rng = random.Random()
    other = {fd_a: fd_b, fd_b: fd_a}
    free_at = {fd_a: 0.0, fd_b: 0.0}  # when each direction's bottleneck is free again
    last_due = {fd_a: 0.0, fd_b: 0.0}  # keeps each direction in order under jitter
    heap: list[tuple[float, int, int, bytes]] = []
    seq = itertools.count()
    sel = selectors.DefaultSelector()
    for fd in (fd_a, fd_b):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    sel.register(ctl_fd, selectors.EVENT_READ)
    while True:
        timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else None
        for key, _ in sel.select(timeout):
            if key.fd == ctl_fd:
                line = ctl_in.readline()
                if not line:
                    return
                imp = Impairment(**json.loads(line))
                ctl.sendall(b"ok\n")
                continue
            while True:
                try:
                    frame = os.read(key.fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    return
                if imp.cut or (imp.loss_pct and rng.random() * 100 < imp.loss_pct):
                    continue
                now = time.monotonic()
                start = max(now, free_at[key.fd])
                if imp.rate_kbit:
                    if start - now > imp.queue_ms / 1000:
                        continue  # the bottleneck's buffer is full: tail drop
                    free_at[key.fd] = start + len(frame) * 8 / (imp.rate_kbit * 1000)
                    start = free_at[key.fd]
                delay = imp.delay_ms + (rng.gauss(0, imp.jitter_ms) if imp.jitter_ms else 0.0)
                due = max(start + max(0.0, delay) / 1000, last_due[key.fd])
                last_due[key.fd] = due
                heapq.heappush(heap, (due, next(seq), other[key.fd], frame))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, out, frame = heapq.heappop(heap)
            with contextlib.suppress(OSError):
                os.write(out, frame)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "relay":
        _relay(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: python -m sim.netns relay FD_A FD_B CONTROL_FD (started by TapLink)")
