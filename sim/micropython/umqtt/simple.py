"""A stand-in for micropython-lib's ``umqtt.simple`` (MQTT 3.1.1), with its interface exactly:
``MQTTClient(client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None,
ssl_params={})``, ``set_callback``, ``set_last_will``, ``connect(clean_session=True, timeout=None)``,
``publish(topic, msg, retain=False, qos=0)``, ``subscribe(topic, qos=0)``, ``check_msg``,
``wait_msg``, ``ping``, ``disconnect``; ``MQTTException``.

micropython-lib's own file is not installable from PyPI (the package there is from 2017 and has no
build metadata), so this is written from the MQTT 3.1.1 specification, over ``sim.micropython.mpsocket``
the way the real one uses MicroPython sockets: a blocking socket (the caller's timeout), and
``check_msg`` switching it to non-blocking for one look and back to blocking afterwards (as the real
one does, which is why the arbiter sets its timeout again after every call). QoS 0 and 1 only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from sim.micropython import mpsocket as socket


class MQTTException(Exception):
    pass


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: bytes | str) -> bytes:
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


class MQTTClient:
    def __init__(
        self,
        client_id: bytes | str,
        server: str,
        port: int = 0,
        user: str | None = None,
        password: str | None = None,
        keepalive: int = 0,
        ssl: Any = None,
        ssl_params: dict[str, Any] | None = None,
    ) -> None:
        if ssl:
            raise MQTTException("the stand-in speaks plain TCP only")
        self.client_id = client_id
        self.server = server
        self.port = port or 1883
        self.user, self.pswd = user, password
        self.keepalive = keepalive
        self.sock: Any = None
        self.cb: Callable[[bytes, bytes], None] | None = None
        self.pid = 0
        self.lw_topic: bytes | str | None = None
        self.lw_msg: bytes | str = b""
        self.lw_qos = 0
        self.lw_retain = False

    def set_callback(self, f: Callable[[bytes, bytes], None]) -> None:
        self.cb = f

    def set_last_will(self, topic: bytes | str, msg: bytes | str, retain: bool = False, qos: int = 0) -> None:
        assert 0 <= qos <= 2 and topic
        self.lw_topic, self.lw_msg, self.lw_qos, self.lw_retain = topic, msg, qos, retain

    def _packet(self, first: int, body: bytes) -> None:
        self.sock.write(bytes((first,)) + _remaining_length(len(body)) + body)

    def connect(self, clean_session: bool = True, timeout: float | None = None) -> int:
        if self.sock:
            self.sock.close()
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        self.sock.connect(socket.getaddrinfo(self.server, self.port)[0][-1])
        flags = 0x02 if clean_session else 0
        payload = _utf8(self.client_id)
        if self.lw_topic:
            flags |= 0x04 | (self.lw_qos << 3) | (0x20 if self.lw_retain else 0)
            payload += _utf8(self.lw_topic) + _utf8(self.lw_msg)
        if self.user:
            flags |= 0xC0
            payload += _utf8(self.user) + _utf8(self.pswd or "")
        self._packet(0x10, _utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", self.keepalive) + payload)
        ack = self.sock.read(4)
        if not ack or len(ack) < 4 or ack[0] != 0x20 or ack[1] != 0x02:
            raise MQTTException("no CONNACK")
        if ack[3] != 0:
            raise MQTTException(ack[3])
        return ack[2] & 1

    def disconnect(self) -> None:
        self.sock.write(b"\xe0\x00")
        self.sock.close()

    def ping(self) -> None:
        self.sock.write(b"\xc0\x00")

    def publish(self, topic: bytes | str, msg: bytes | str, retain: bool = False, qos: int = 0) -> None:
        assert qos in (0, 1), "QoS 2 is not supported"
        body = _utf8(topic)
        if qos:
            self.pid = self.pid % 65535 + 1
            body += struct.pack("!H", self.pid)
        body += msg.encode() if isinstance(msg, str) else bytes(msg)
        self._packet(0x30 | qos << 1 | (1 if retain else 0), body)
        if qos == 1:
            while self.wait_msg() != 0x40 or self._ack_pid() != self.pid:
                pass

    def _ack_pid(self) -> int:
        body = self.sock.read(3)  # length byte (2) + packet id
        return body[1] << 8 | body[2]

    def subscribe(self, topic: bytes | str, qos: int = 0) -> None:
        assert self.cb is not None, "Subscribe callback is not set"
        self.pid = self.pid % 65535 + 1
        self._packet(0x82, struct.pack("!H", self.pid) + _utf8(topic) + bytes((qos,)))
        while True:
            if self.wait_msg() == 0x90:
                resp = self.sock.read(4)
                if resp[3] == 0x80:
                    raise MQTTException(resp[3])
                return

    def _read_length(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def wait_msg(self) -> int | None:
        first = self.sock.read(1)
        self.sock.setblocking(True)
        if first is None:
            return None
        if first == b"":
            raise OSError(-1, "connection closed")
        op = first[0]
        if op == 0xD0:  # PINGRESP
            self.sock.read(1)
            return None
        if op & 0xF0 != 0x30:
            return op  # the caller reads the rest (SUBACK, PUBACK)
        size = self._read_length()
        tlen = struct.unpack("!H", self.sock.read(2))[0]
        topic = self.sock.read(tlen)
        size -= tlen + 2
        pid = 0
        if op & 0x06:
            pid = struct.unpack("!H", self.sock.read(2))[0]
            size -= 2
        msg = self.sock.read(size) if size else b""
        if self.cb is not None:
            self.cb(topic, msg)
        if op & 0x06 == 0x02:
            self.sock.write(b"\x40\x02" + struct.pack("!H", pid))
        return op

    def check_msg(self) -> int | None:
        self.sock.setblocking(False)
        return self.wait_msg()
