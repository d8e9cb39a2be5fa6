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
import ipaddress
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator

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
        return _run(_ip(), "-n", self.name, *args)

    def tc(self, *args: str) -> str:
        """Run ``tc ARGS`` inside the namespace."""
        return _run(_ip(), "netns", "exec", self.name, _tc(), *args)

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
                        "built with CONFIG_NET_SCH_NETEM"
                    ) from exc
                raise

    def clear(self) -> None:
        """Remove any shaping from both ends (no error if there was none)."""
        for ns, ifname in ((self.a, self.a_if), (self.b, self.b_if)):
            with contextlib.suppress(NetNsError):
                ns.tc("qdisc", "del", "dev", ifname, "root")

    def cut(self) -> None:
        """Drop the link: both ends administratively down.

        A village link that drops is closer to "100 % loss" (the kiosk's own interface stays up and
        packets vanish silently) than to "link down"; netem would model that, but ``tc``'s netem, drop
        actions and classifiers are all missing from some kernels (this machine's among them), and
        ``ip link set down`` works everywhere. The difference callers see: while cut, sends to the peer
        fail at once with ENETUNREACH instead of vanishing, and routes over the link are removed, so
        after :meth:`restore` the addresses are added back and ICE must re-check its pairs. Timeouts
        (ICE consent, Janus's keepalive) behave the same either way.
        """
        self.a.ip("link", "set", self.a_if, "down")
        self.b.ip("link", "set", self.b_if, "down")
        self._cut = True

    def restore(self) -> None:
        """Bring a cut link back up (idempotent). The addresses stay on the interfaces across down/up."""
        self.a.ip("link", "set", self.a_if, "up")
        self.b.ip("link", "set", self.b_if, "up")
        self._cut = False

    @property
    def is_cut(self) -> bool:
        return self._cut


def link(a: NetNs, b: NetNs, addr_a: str = "10.77.0.1/24", addr_b: str = "10.77.0.2/24") -> VethLink:
    """Join ``a`` and ``b`` with a veth pair carrying ``addr_a`` in ``a`` and ``addr_b`` in ``b``."""
    n = next(_counter)
    a_if, b_if = f"kl{n}a", f"kl{n}b"
    a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    a.ip("addr", "add", addr_a, "dev", a_if)
    b.ip("addr", "add", addr_b, "dev", b_if)
    a.ip("link", "set", a_if, "up")
    b.ip("link", "set", b_if, "up")
    return VethLink(a, b, a_if, b_if, addr_a, addr_b)


def netem_available() -> str | None:
    """None if ``tc ... netem`` works in a fresh namespace, else the reason (for ``pytest.skip``)."""
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
