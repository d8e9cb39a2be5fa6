"""Ending the helper processes the simulators start (brokers, buses), by their pid."""

from __future__ import annotations

import subprocess


def end_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; nothing if it has ended already."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace_s)
