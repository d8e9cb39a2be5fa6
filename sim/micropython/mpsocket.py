"""MicroPython's ``socket`` module on CPython: stream sockets with ``read``/``write`` as MicroPython has.

``read(n)`` on a blocking socket returns n bytes (fewer only at EOF); on a non-blocking one what is there,
or None when nothing is. A timeout raises ``OSError`` (ETIMEDOUT), as MicroPython does.
"""

from __future__ import annotations

import errno
import socket as _socket
from typing import Any

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
IPPROTO_TCP = _socket.IPPROTO_TCP
TCP_NODELAY = _socket.TCP_NODELAY


def getaddrinfo(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
    return _socket.getaddrinfo(host, port, AF_INET, SOCK_STREAM)


class socket:  # noqa: N801 - MicroPython's name
    def __init__(self, af: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> None:
        self._s = _socket.socket(af, type, proto)
        self._blocking = True

    def settimeout(self, t: float | None) -> None:
        self._s.settimeout(t)
        self._blocking = t != 0

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0)

    def setsockopt(self, level: int, opt: int, value: int) -> None:
        self._s.setsockopt(level, opt, value)

    def connect(self, addr: Any) -> None:
        try:
            self._s.connect(addr)
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, "connect timed out") from None

    def read(self, n: int = -1) -> bytes | None:
        out = b""
        while n < 0 or len(out) < n:
            try:
                chunk = self._s.recv(4096 if n < 0 else n - len(out))
            except BlockingIOError:  # non-blocking and nothing (more) there
                return out or None
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "read timed out") from None
            if not chunk:
                break
            out += chunk
            if not self._blocking:
                break
        return out

    def write(self, buf: bytes | str, n: int | None = None) -> int:
        if isinstance(buf, str):  # MicroPython streams take str too (its UTF-8 bytes)
            buf = buf.encode()
        data = bytes(buf if n is None else buf[:n])
        try:
            self._s.sendall(data)
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, "write timed out") from None
        return len(data)

    def close(self) -> None:
        self._s.close()
