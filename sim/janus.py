"""Janus as the county's media server (VideoRoom SFU) for tests, benchmarks and ``kiosk demo``.

:class:`JanusServer` writes a private configuration folder, starts ``/usr/bin/janus`` on it (inside a
:class:`~sim.netns.NetNs` when given) and stops it by pid. Only the VideoRoom plugin and the HTTP and
WebSocket transports are loaded; every other plugin, transport, event handler and logger found in the
distribution's folders is listed under ``disable``, so a Debian upgrade that adds one changes nothing.

ICE: libnice gathers no candidate on a loopback interface. In a test namespace pass
``ice_enforce="<veth name>"`` (what :meth:`NetNs.add_address_link` returns) so Janus offers only the
127.0.0.2 (or private) address on that link; on a real host leave it None and the host's addresses are
gathered. No STUN server is configured (``nat`` section left without ``stun_server``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sim.netns import NetNs

JANUS_BIN = "/usr/bin/janus"


class JanusStartError(RuntimeError):
    """Janus did not come up; the message carries the reason and the tail of its log."""


@dataclass(frozen=True)
class JanusRoom:
    """One VideoRoom room written into ``janus.plugin.videoroom.jcfg``."""

    room: int = 1234
    description: str = "kiosk call"
    publishers: int = 6
    bitrate: int = 1_000_000
    fir_freq: int = 3
    audiocodec: str = "opus"
    videocodec: str = "vp8,h264"
    pin: str | None = None
    secret: str = "kiosk-lab-secret"

    def jcfg(self) -> str:
        lines = [
            f"room-{self.room}: {{",
            f"\tdescription = {json.dumps(self.description)}",
            f"\tsecret = {json.dumps(self.secret)}",
            f"\tpublishers = {int(self.publishers)}",
            f"\tbitrate = {int(self.bitrate)}",
            f"\tfir_freq = {int(self.fir_freq)}",
            f"\taudiocodec = {json.dumps(self.audiocodec)}",
            f"\tvideocodec = {json.dumps(self.videocodec)}",
            "\trecord = false",
        ]
        if self.pin is not None:
            lines.append(f"\tpin = {json.dumps(self.pin)}")
        lines.append("}")
        return "\n".join(lines)


def janus_available() -> str | None:
    """None if the Janus binary and its VideoRoom plugin are installed, else a reason for ``pytest.skip``."""
    if not os.access(JANUS_BIN, os.X_OK):
        return f"{JANUS_BIN} is not installed (apt-get install janus)"
    if not _lib_folder("plugins"):
        return "Janus's plugin folder (/usr/lib/*/janus/plugins) is missing"
    return None


def _lib_folder(kind: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/*/janus/{kind}")) + sorted(glob.glob(f"/usr/lib/janus/{kind}"))
    return found[0] if found else None


def _disable_all_but(folder: str | None, keep: Sequence[str]) -> str:
    if not folder:
        return ""
    names = sorted(p.name for p in Path(folder).glob("*.so") if p.name not in keep)
    return ",".join(names)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class JanusServer:
    """A Janus process with its own configuration, log and ports.

    ``bind``: the address both transports listen on (and where :attr:`http_url`/:attr:`ws_url` point).
    ``netns``: start Janus (and pick its free ports, and probe it) inside that namespace.
    ``rooms``: rooms to create; default one room 1234 with ``pin``. ``ice_enforce``: the only
    interface(s) or address prefix(es) libnice may gather on (``nat.ice_enforce_list``).
    ``rtp_port_range``: inside the ephemeral range; each namespace has its own ports.
    """

    def __init__(
        self,
        bind: str = "127.0.0.1",
        *,
        netns: NetNs | None = None,
        rooms: Sequence[JanusRoom] | None = None,
        pin: str | None = None,
        ice_enforce: str | None = None,
        rtp_port_range: str = "40000-49999",
        session_timeout_s: int = 60,
        debug_level: int = 4,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.bind = bind
        self.netns = netns
        self.rooms = list(rooms) if rooms is not None else [JanusRoom(pin=pin)]
        self.ice_enforce = ice_enforce
        self.rtp_port_range = rtp_port_range
        self.session_timeout_s = session_timeout_s
        self.debug_level = debug_level
        self.start_timeout_s = start_timeout_s
        self._tmp: Path | None = None
        self.confdir: Path | None = None
        self.log_path: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.ws_port = 0

    # --- addresses ---------------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """``http://<bind>:<port>/janus`` (the long-poll REST transport)."""
        return f"http://{self.bind}:{self.http_port}/janus"

    @property
    def ws_url(self) -> str:
        """``ws://<bind>:<port>`` (subprotocol ``janus-protocol``)."""
        return f"ws://{self.bind}:{self.ws_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _in_ns(self) -> contextlib.AbstractContextManager[object]:
        return self.netns.entered() if self.netns is not None else contextlib.nullcontext()

    # --- configuration -----------------------------------------------------------------------------

    def _write_config(self, confdir: Path) -> None:
        plugins = _lib_folder("plugins")
        transports = _lib_folder("transports")
        events = _lib_folder("events")
        loggers = _lib_folder("loggers")
        nat = ["\tnice_debug = false", "\tignore_mdns = true"]
        if self.ice_enforce:
            nat.append(f"\tice_enforce_list = {json.dumps(self.ice_enforce)}")
        else:
            nat.append('\tice_ignore_list = "vmnet"')
        general = [
            f"\tconfigs_folder = {json.dumps(str(confdir))}",
            f"\tplugins_folder = {json.dumps(plugins or '')}",
            f"\ttransports_folder = {json.dumps(transports or '')}",
            f"\tevents_folder = {json.dumps(events or '')}",
            f"\tloggers_folder = {json.dumps(loggers or '')}",
            f"\tdebug_level = {int(self.debug_level)}",
            "\tdebug_timestamps = true",
            "\tdebug_colors = false",
            "\tlog_to_stdout = false",
            f"\tlog_to_file = {json.dumps(str(self.log_path))}",
            f"\tsession_timeout = {int(self.session_timeout_s)}",
            '\tserver_name = "kiosk-call-lab"',
        ]
        core = "\n".join(
            [
                "general: {",
                *general,
                "}",
                "certificates: {",
                "}",
                "media: {",
                "\tipv6 = false",
                f"\trtp_port_range = {json.dumps(self.rtp_port_range)}",
                "\tno_media_timer = 1",
                "\tslowlink_threshold = 4",
                "}",
                "nat: {",
                *nat,
                "}",
                "plugins: {",
                f"\tdisable = {json.dumps(_disable_all_but(plugins, ['libjanus_videoroom.so']))}",
                "}",
                "transports: {",
                f"\tdisable = {json.dumps(_disable_all_but(transports, ['libjanus_http.so', 'libjanus_websockets.so']))}",
                "}",
                "loggers: {",
                f"\tdisable = {json.dumps(_disable_all_but(loggers, []))}",
                "}",
                "events: {",
                "\tbroadcast = false",
                f"\tdisable = {json.dumps(_disable_all_but(events, []))}",
                "}",
                "",
            ]
        )
        (confdir / "janus.jcfg").write_text(core)
        (confdir / "janus.transport.http.jcfg").write_text(
            "general: {\n"
            '\tjson = "compact"\n'
            '\tbase_path = "/janus"\n'
            "\thttp = true\n"
            f"\tport = {self.http_port}\n"
            f"\tip = {json.dumps(self.bind)}\n"
            "\thttps = false\n"
            "}\n"
            "admin: {\n\tadmin_http = false\n\tadmin_https = false\n}\n"
            # CORS: the clerk page is served from another origin (ClerkBrowser's port).
            'cors: {\n\tallow_origin = "*"\n}\n'
        )
        (confdir / "janus.transport.websockets.jcfg").write_text(
            "general: {\n"
            '\tjson = "compact"\n'
            "\tws = true\n"
            f"\tws_port = {self.ws_port}\n"
            f"\tws_ip = {json.dumps(self.bind)}\n"
            "\twss = false\n"
            "}\n"
            "admin: {\n\tadmin_ws = false\n\tadmin_wss = false\n}\n"
        )
        rooms = "\n".join(r.jcfg() for r in self.rooms)
        (confdir / "janus.plugin.videoroom.jcfg").write_text(
            f'general: {{\n\tstring_ids = false\n\tadmin_key = "kiosk-lab-admin"\n}}\n{rooms}\n'
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> JanusServer:
        """Write the configuration, start Janus and wait until ``GET <http_url>/info`` answers.

        Raises :class:`JanusStartError` (with the log's tail) if Janus exits or does not answer within
        ``start_timeout_s``.
        """
        if self.proc is not None:
            return self
        reason = janus_available()
        if reason:
            raise JanusStartError(reason)
        # mkdtemp, not TemporaryDirectory: the latter's finalizer removes the folder at exit, also
        # when KIOSK_KEEP_JANUS_LOG asks to keep it for a post-mortem.
        self._tmp = Path(tempfile.mkdtemp(prefix="kjanus-"))
        self.confdir = self._tmp
        self.log_path = self.confdir / "janus.log"
        with self._in_ns():
            self.http_port = _free_port(self.bind)
            self.ws_port = _free_port(self.bind)
            while self.ws_port == self.http_port:
                self.ws_port = _free_port(self.bind)
            self._write_config(self.confdir)
            stderr = open(self.confdir / "janus.stderr", "wb")  # noqa: SIM115 - owned by the process
            try:
                self.proc = subprocess.Popen(
                    [
                        JANUS_BIN,
                        "-F",
                        str(self.confdir),
                        "-C",
                        str(self.confdir / "janus.jcfg"),
                        "-o",
                        "-N",
                        "-L",
                        str(self.log_path),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                    cwd=str(self.confdir),
                )
            finally:
                stderr.close()
            try:
                self._wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise JanusStartError(
                    f"janus exited with {self.proc.returncode} during start-up; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.http_url}/info", timeout=1.0) as resp:
                    info = json.loads(resp.read())
                if info.get("janus") == "server_info" and "janus.plugin.videoroom" in info.get("plugins", {}):
                    return
                last = RuntimeError(f"unexpected /info answer: {str(info)[:200]}")
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = exc
            time.sleep(0.05)
        raise JanusStartError(
            f"janus did not answer {self.http_url}/info within {self.start_timeout_s} s ({last}); "
            f"log tail:\n{self.log_tail()}"
        )

    def info(self) -> dict[str, object]:
        """``GET /janus/info`` (made inside the namespace)."""
        with self._in_ns(), urllib.request.urlopen(f"{self.http_url}/info", timeout=2.0) as resp:
            return dict(json.loads(resp.read()))

    def stop(self) -> None:
        """SIGTERM Janus by pid, SIGKILL after 5 s; remove the temporary folder. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._tmp is not None and os.environ.get("KIOSK_KEEP_JANUS_LOG") is None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL Janus at once (a crashed media server); the folder stays until :meth:`stop`."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of Janus's log and stderr (for assertion messages)."""
        out: list[str] = []
        for p in (self.log_path, self.confdir / "janus.stderr" if self.confdir else None):
            if p is not None and p.exists():
                out += p.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out[-lines:])

    def __enter__(self) -> JanusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_janus(**kwargs: object) -> Iterator[JanusServer]:
    """``with running_janus(netns=ns, ice_enforce="kv0a") as j:`` — start, yield, stop."""
    server = JanusServer(**kwargs)  # type: ignore[arg-type]
    with server:
        yield server


__all__ = ["JanusRoom", "JanusServer", "JanusStartError", "janus_available", "running_janus"]
