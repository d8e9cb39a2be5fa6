"""A private D-Bus daemon on a unix socket of our own, for tests and a technician's bench.

``dbus-daemon --nofork --print-address --config-file=...`` with a config that listens on
``<workdir>/bus`` and lets every local client own any name and talk to anyone (the stand-in RAUC
owns ``de.pengutronix.rauc`` there, the appliance calls it). ``address`` is what ``[ota] dbus_address``
takes. ``stop()`` (or leaving the ``with`` block) ends the process by its pid.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from kiosk_core.errors import KioskError
from sim.process import end_process

CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


class DBusDaemonError(KioskError, RuntimeError):
    code = "dbus_daemon.error"


class DBusDaemon:
    """A ``dbus-daemon`` of our own. The socket path must stay under 108 bytes (``sun_path``)."""

    def __init__(self, workdir: str | Path | None = None) -> None:
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="kiosk-dbus-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "bus"
        if len(str(self.socket).encode()) >= 108:
            raise DBusDaemonError(f"socket path {self.socket} is too long for a unix socket")
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> DBusDaemon:
        exe = shutil.which("dbus-daemon")
        if exe is None:
            raise DBusDaemonError("dbus-daemon is not installed (apt-get install dbus-daemon)")
        config = self.dir / "bus.conf"
        config.write_text(CONFIG.format(socket=self.socket), encoding="utf-8")
        self.proc = subprocess.Popen(
            [exe, "--nofork", "--print-address", f"--config-file={config}"],
            stdout=subprocess.PIPE,
            stderr=open(self.dir / "dbus-daemon.log", "ab"),  # noqa: SIM115 - the child holds it
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            self.stop()
            log = (self.dir / "dbus-daemon.log").read_text(errors="replace")
            raise DBusDaemonError(f"dbus-daemon did not start: {log[-500:]}")
        self.address = line
        return self

    def stop(self) -> None:
        """End the daemon (by its pid); idempotent."""
        end_process(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> DBusDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
