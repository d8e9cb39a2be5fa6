"""The county clerk (or the supervisor) as a real browser: headless Chromium on ``sim/clerk_web``.

:class:`ClerkBrowser` serves ``clerk.html``/``viewer.html``/``clerk.js``, Janus's own ``/janus.js``
(Debian's ``libjs-janus-gateway``) and collects what the page POSTs to ``/stats`` every 500 ms; then
it starts headless Chromium on the page, inside a :class:`~sim.netns.NetNs` when given (the HTTP
server's socket is created inside it too, so page and Janus share the namespace's loopback).

The stats a page posts (all fields always present)::

    {role, display, ts, joined, published, subscribed_feeds,
     feeds: [{id, display, mids: [{mid, kind, framesDecoded, frameWidth, frameHeight, framesPerSecond,
              freezeCount, totalFreezesDuration, packetsLost, packetsReceived, jitter, bytesReceived,
              totalSamplesReceived, audioLevel, concealedSamples, ...}]}],
     outbound: {bytesSent, packetsSent, framesEncoded, streams: [...]},
     latency_ms: [recent samples], latency_count, errors: [...]}

(``inbound-rtp``/``outbound-rtp`` fields are those Chromium reports; absent ones are left out.)

Chromium details that matter: ``--allow-loopback-in-peer-connection`` (else 127.x candidates are
dropped), ``--disable-features=WebRtcHideLocalIpsWithMdns`` (else a page without camera permission
offers ``.local`` names Janus cannot resolve), the fake capture device fed from a small y4m made by
ffmpeg (Chromium loops it), no ``--mute-audio`` (received audio must be played out to be counted).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sim.netns import NetNs

WEB_DIR = Path(__file__).with_name("clerk_web")
JANUS_JS = Path("/usr/share/javascript/janus-gateway/janus.js")
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
MAX_STATS_BYTES = 1 << 20

Stats = dict[str, Any]


class ClerkBrowserError(RuntimeError):
    """Chromium or the page did not come up, or a wait ran out; the message carries the log's tail."""


def chromium_binary() -> str | None:
    """The Chromium executable (the real binary, not Debian's shell wrapper, so its pid is Chromium's)."""
    for c in CHROMIUM_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("chromium")


def clerk_browser_available() -> str | None:
    """None if Chromium, janus.js and ffmpeg are here, else a reason for ``pytest.skip``."""
    if chromium_binary() is None:
        return "chromium is not installed (apt-get install chromium)"
    if not JANUS_JS.exists():
        return f"{JANUS_JS} is missing (apt-get install libjs-janus-gateway)"
    if shutil.which("ffmpeg") is None:
        return "ffmpeg is not installed (needed for the fake camera's y4m)"
    return None


def make_y4m(path: Path, *, width: int = 320, height: int = 240, fps: int = 15, seconds: float = 3.0) -> Path:
    """A short ``testsrc2`` clip as y4m for ``--use-file-for-fake-video-capture`` (Chromium loops it)."""
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
            "-t", str(seconds), "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


class _StatsStore:
    def __init__(self, history: int) -> None:
        self.lock = threading.Lock()
        self.latest: dict[str, Stats] = {}
        self.history: deque[Stats] = deque(maxlen=history)
        self.posts = 0
        self.changed = threading.Condition(self.lock)

    def put(self, stats: Stats) -> None:
        with self.changed:
            self.latest[str(stats.get("role", "?"))] = stats
            self.history.append(stats)
            self.posts += 1
            self.changed.notify_all()


def _handler(store: _StatsStore, page_files: dict[str, Path]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass  # the page polls every 500 ms; request lines would drown the test output

        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0]
            path = page_files.get(name)
            if path is None or not path.is_file():  # janus.js is a separate Debian package
                self.send_error(404)
                return
            body = path.read_bytes()
            ctype = "text/html" if path.suffix == ".html" else "application/javascript"
            self.send_response(200)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if self.path != "/stats":
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_STATS_BYTES:
                self.send_error(413)
                return
            try:
                stats = json.loads(self.rfile.read(length))
            except ValueError:
                self.send_error(400)
                return
            if isinstance(stats, dict):
                stats["received_at"] = time.time()
                store.put(stats)
            self.send_response(204)
            self.end_headers()

    return Handler


def clerk_page_url(
    base: str,
    janus_url: str,
    *,
    room: int = 1234,
    viewer: bool = False,
    display: str | None = None,
    source: str = "camera",
    width: int = 320,
    height: int = 240,
    pin: str | None = None,
    timecode: bool = False,
    feeds: str | None = None,
) -> str:
    """The address of ``clerk.html`` (or ``viewer.html``) under ``base`` (``http://host:port``) with its
    query filled in (``sim/clerk_web/clerk.js`` reads it): Janus ``server``, ``room``, ``display``, ..."""
    params: dict[str, str] = {
        "server": janus_url,
        "room": str(room),
        "display": display or ("viewer-1" if viewer else "clerk-1"),
        "source": source,
        "w": str(width),
        "h": str(height),
    }
    if pin is not None:
        params["pin"] = pin
    if timecode:
        params["timecode"] = "1"
    if feeds is not None:
        params["feeds"] = feeds
    page = "viewer.html" if viewer else "clerk.html"
    return f"{base}/{page}?{urlencode(params)}"


def serve_clerk_pages(
    bind: str = "127.0.0.1", port: int = 0, *, history: int = 400, store: _StatsStore | None = None
) -> ThreadingHTTPServer:
    """Serve ``clerk.html``, ``viewer.html``, ``clerk.js`` and ``/janus.js`` on ``bind:port`` (0: a free
    port, read it from ``server.server_address``) from a daemon thread, collecting the pages' ``/stats``
    posts. The socket is made in the caller's network namespace. Stop it with :func:`stop_clerk_pages`.

    Raises ``OSError`` if the address cannot be bound; janus.js missing is answered 404 per request.
    """
    files = {f"/{p.name}": p for p in WEB_DIR.iterdir() if p.suffix in (".html", ".js")}
    files["/janus.js"] = JANUS_JS
    server = ThreadingHTTPServer((bind, port), _handler(store or _StatsStore(history), files))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="clerk-http", daemon=True).start()
    return server


def stop_clerk_pages(server: ThreadingHTTPServer) -> None:
    """Stop a server made by :func:`serve_clerk_pages` and close its socket."""
    server.shutdown()
    server.server_close()


class ClerkBrowser:
    """A clerk (or, with ``viewer=True``, a supervisor) in headless Chromium, joined to ``janus_url``.

    ``source``: "canvas" (timecoded canvas + 440 Hz tone bursts) or "camera" (Chromium's fake device
    fed by a testsrc2 y4m). ``timecode``: the page reads the timecode of received videos and reports
    latency. ``feeds``: display prefixes to subscribe to (default page's: clerk "kiosk", viewer
    "kiosk,clerk"). ``netns``: run the page's server and Chromium in that namespace.
    """

    def __init__(
        self,
        janus_url: str,
        *,
        room: int = 1234,
        pin: str | None = None,
        display: str | None = None,
        source: str = "canvas",
        timecode: bool = False,
        viewer: bool = False,
        feeds: str | None = None,
        netns: NetNs | None = None,
        bind: str = "127.0.0.1",
        width: int = 320,
        height: int = 240,
        history: int = 400,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if source not in ("canvas", "camera"):
            raise ValueError(f"source must be canvas or camera, not {source!r}")
        self.janus_url = janus_url
        self.room = room
        self.pin = pin
        self.viewer = viewer
        self.role = "viewer" if viewer else "clerk"
        self.display = display or f"{self.role}-1"
        self.source = source
        self.timecode = timecode
        self.feeds = feeds
        self.netns = netns
        self.bind = bind
        self.width, self.height = width, height
        self.extra_args = extra_args
        self._store = _StatsStore(history)
        self._server: ThreadingHTTPServer | None = None
        self._tmp: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.port = 0

    # --- addresses and state -----------------------------------------------------------------------

    @property
    def page_url(self) -> str:
        return clerk_page_url(
            f"http://{self.bind}:{self.port}",
            self.janus_url,
            room=self.room,
            viewer=self.viewer,
            display=self.display,
            source=self.source,
            width=self.width,
            height=self.height,
            pin=self.pin,
            timecode=self.timecode,
            feeds=self.feeds,
        )

    def stats(self) -> Stats | None:
        """The latest stats this page posted (None before the first post)."""
        with self._store.lock:
            return self._store.latest.get(self.role)

    def history(self) -> list[Stats]:
        """Every post kept (bounded, oldest first)."""
        with self._store.lock:
            return list(self._store.history)

    def wait_for(self, predicate: Callable[[Stats], bool], timeout_s: float, what: str = "") -> Stats:
        """Wait until a posted stats object satisfies ``predicate``; return it.

        Raises :class:`ClerkBrowserError` with the last stats and Chromium's log tail on timeout, or at
        once if Chromium exited.
        """
        deadline = time.monotonic() + timeout_s
        with self._store.changed:
            while True:
                latest = self._store.latest.get(self.role)
                if latest is not None:
                    try:
                        if predicate(latest):
                            return latest
                    except (KeyError, IndexError, TypeError):
                        pass  # a predicate reading fields the page has not filled yet
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    break
                self._store.changed.wait(min(left, 0.5))
        exited = (
            ""
            if self.proc is None or self.proc.poll() is None
            else f" (chromium exited {self.proc.returncode})"
        )
        raise ClerkBrowserError(
            f"the {self.role} page did not reach {what or 'the expected state'} within {timeout_s} s{exited}; "
            f"last stats: {json.dumps(latest)[:1500] if latest else None}\nchromium log tail:\n{self.log_tail()}"
        )

    # --- lifecycle ---------------------------------------------------------------------------------

    def _in_ns(self) -> contextlib.AbstractContextManager[object]:
        return self.netns.entered() if self.netns is not None else contextlib.nullcontext()

    def start(self) -> ClerkBrowser:
        """Serve the pages, start Chromium on :attr:`page_url`; returns once Chromium is launched
        (use :meth:`wait_for` for the page's progress)."""
        reason = clerk_browser_available()
        if reason:
            raise ClerkBrowserError(reason)
        # mkdtemp, not TemporaryDirectory: the latter's finalizer removes the folder at exit, also
        # when KIOSK_KEEP_CLERK_LOG asks to keep it for a post-mortem.
        tmp = self._tmp = Path(tempfile.mkdtemp(prefix="kclerk-"))
        with self._in_ns():
            # The listening socket is made here, so it belongs to the namespace.
            self._server = serve_clerk_pages(self.bind, store=self._store)
            self.port = int(self._server.server_address[1])
            args = [
                chromium_binary() or "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-breakpad",
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,OptimizationHints,Translate",
                "--enable-logging=stderr",
                "--log-level=0",
                f"--user-data-dir={tmp / 'profile'}",
                "--window-size=800,600",
            ]
            if self.source == "camera" and not self.viewer:
                y4m = make_y4m(tmp / "fake.y4m", width=self.width, height=self.height)
                args.append(f"--use-file-for-fake-video-capture={y4m}")
            args += list(self.extra_args)
            args.append(self.page_url)
            self.log_path = tmp / "chromium.log"
            env = dict(
                os.environ,
                HOME=str(tmp),
                XDG_CONFIG_HOME=str(tmp / "config"),
                XDG_CACHE_HOME=str(tmp / "cache"),
            )
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(tmp),
                    start_new_session=True,  # its own process group: stop() ends Chromium's helpers too
                )
        return self

    def stop(self) -> None:
        """End Chromium's process group (SIGTERM, SIGKILL after 5 s) and the page server. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the group id is Chromium's pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            # Helpers (renderer, GPU, zygote) may outlive the browser process for a moment.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._server is not None:
            stop_clerk_pages(self._server)
            self._server = None
        if self._tmp is not None and os.environ.get("KIOSK_KEEP_CLERK_LOG") is None:
            self._saved_tail = self.log_tail()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Chromium's stderr (console messages appear as ``CONSOLE`` lines)."""
        if self.log_path is not None and self.log_path.exists():
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return getattr(self, "_saved_tail", "")

    def __enter__(self) -> ClerkBrowser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_clerk(janus_url: str, **kwargs: Any) -> Iterator[ClerkBrowser]:
    """``with running_clerk(janus.http_url, netns=ns) as clerk:`` — start, yield, stop."""
    browser = ClerkBrowser(janus_url, **kwargs)
    try:
        yield browser.start()
    finally:
        browser.stop()


# --- helpers for predicates -------------------------------------------------------------------------


def feed_mids(stats: Stats, display_prefix: str) -> list[dict[str, Any]]:
    """Every inbound stream (``mids`` entry) of the feeds whose display starts with ``display_prefix``."""
    return [
        m
        for f in stats.get("feeds", [])
        if str(f.get("display", "")).startswith(display_prefix)
        for m in f.get("mids", [])
    ]


def videos_decoding(stats: Stats, display_prefix: str, min_frames: int) -> list[dict[str, Any]]:
    """The video streams of matching feeds that decoded at least ``min_frames`` frames."""
    return [
        m
        for m in feed_mids(stats, display_prefix)
        if m.get("kind") == "video" and int(m.get("framesDecoded") or 0) >= min_frames
    ]


def audio_receiving(stats: Stats, display_prefix: str) -> list[dict[str, Any]]:
    """The audio streams of matching feeds with samples received."""
    return [
        m
        for m in feed_mids(stats, display_prefix)
        if m.get("kind") == "audio" and int(m.get("totalSamplesReceived") or 0) > 0
    ]
