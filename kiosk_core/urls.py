"""URL policy helpers every process shares: what counts as loopback, and a URL fit for logs and events."""

from __future__ import annotations

import ipaddress
import urllib.parse

LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL without user-info and query (they carry tokens), for events and logs."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        if p.port:
            host = f"{host}:{p.port}"
    except ValueError:
        return url.split("?", 1)[0].split("@")[-1][:80]
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))
