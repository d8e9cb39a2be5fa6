"""A mosquitto broker of our own, on a free loopback port, for `kiosk demo`, tests and benchmarks.

The process gets a temporary config and directory; ``stop()`` (or leaving the ``with`` block) ends it.
``kill()`` and ``start()`` again on the same port let tests cut the central broker and bring it back;
``save()`` before ``kill()`` makes what the broker knows by then (a platform's persistent session and
its subscriptions) survive the restart, as a broker's periodic autosave would in the field.
``config=`` runs a configuration of one's own instead of the open test listener (e.g. what
``kiosk fleet acl`` generates, with its listener on ``port``); logging, persistence and the limits are
still added after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from kiosk_core.errors import KioskError
from sim.process import end_process

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


class BrokerError(KioskError, RuntimeError):
    code = "mosquitto.error"


def find_mosquitto() -> str:
    path = shutil.which("mosquitto", path=SEARCH_PATH)
    if path is None:
        raise BrokerError("mosquitto is not installed: run scripts/dev.sh setup (apt-get install mosquitto)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A local mosquitto. ``persistent=True`` keeps retained messages and sessions across restarts."""

    def __init__(
        self,
        *,
        port: int | None = None,
        persistent: bool = True,
        workdir: str | Path | None = None,
        extra_config: str = "",
        config: str | None = None,
        name: str = "broker",
        autosave_s: int = 1,
    ) -> None:
        """``autosave_s``: how often a persistent broker writes its database (the device's local
        broker uses 10, as ``provisioning/mosquitto-local.conf``; a power cut loses what came since)."""
        self.port = port or free_port()
        self.name = name
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"kiosk-{name}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.autosave_s = autosave_s
        self.extra_config = extra_config
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    @property
    def db_path(self) -> Path:
        return self.dir / "mosquitto.db"

    def _write_config(self) -> None:
        # Without a config of the caller's: one open listener on loopback.
        listener = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"] if self.config is None else []
        lines = [
            # The appliance keeps a persistent session on the local bus: while it restarts, the broker
            # must hold every QoS 1 event for it, not the default 1000.
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            "max_packet_size 1048576",
            # Small request/response packets: no Nagle delay on the broker's side either.
            "set_tcp_nodelay true",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp true",
        ]
        if os.geteuid() == 0:
            # Started as root (CI, a technician's bench), mosquitto would switch to the 'mosquitto' user
            # and could not read certificates or state in our private temporary directory.
            lines.append("user root")
        if self.persistent:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                f"autosave_interval {self.autosave_s}",
            ]
        else:
            lines += ["persistence false"]
        own = self.config.rstrip("\n") + "\n" if self.config else ""
        text = own + "\n".join(listener + lines) + "\n" + self.extra_config
        self.config_path.write_text(text)

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout_s}s")

    def save(self, timeout_s: float = 10.0) -> None:
        """Have the running broker write its persistence database now, and wait until it has.

        Everything the broker had processed before this call (sessions with their subscriptions,
        retained messages, queued messages) is then in ``db_path`` and comes back after ``kill()`` and
        ``start()``. mosquitto writes the database on SIGUSR1 (and every ``autosave_interval``) to a
        new file that it renames over the old one, so a new inode means a complete, newer database.
        mosquitto is single-threaded: a database renamed after this call began was written after
        everything it had answered before the call.
        """
        if not self.persistent:
            raise BrokerError(f"{self.name}: save() needs persistent=True")
        if self.proc is None or self.proc.poll() is not None:
            raise BrokerError(f"{self.name}: save() needs a running broker")

        def identity() -> tuple[int, int] | None:
            try:
                st = self.db_path.stat()
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_mtime_ns

        before = identity()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while identity() in (None, before):
            if self.proc.poll() is not None:
                raise BrokerError(f"{self.name}: mosquitto exited with {self.proc.returncode} while saving")
            if time.monotonic() > deadline:
                raise BrokerError(f"{self.name}: mosquitto did not write {self.db_path} within {timeout_s}s")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: no Will is sent to anyone, nothing is saved (a crash or power cut of the broker)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
