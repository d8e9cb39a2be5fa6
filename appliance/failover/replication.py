"""The pair link: the two terminals' replication over TCP on the room's LAN (docs/failover.md).

Each terminal listens (``listen``) and connects to the other (``peer``) with the firmware's backoff;
what a terminal *sends* goes on the connection it made, what it *receives* comes on the one it
accepted. Every line is one JSON object ``{"body": {...}, "mac": "<hex>"}``, the MAC HMAC-SHA256 over
the canonical body (``canonical``: sorted keys, no spaces, UTF-8) with the pair key.

Against replay: the accepting side opens each connection with a signed ``hello`` carrying a fresh
random ``nonce``; every later line on that connection must carry it (``to``) and a ``seq`` greater
than the last. A line recorded on another connection, or earlier on this one, is refused.

Hostile input (garbage, a line over ``MAX_LINE``, a wrong key, a replay, a bad shape) is refused with a
logged reason and counted in ``refused``; the connection survives a refused line, and is dropped (the
peer reconnects) after ``MAX_REFUSED`` of them or an oversized line. Nothing here raises to the caller.
The epoch rules are the service's (``lease.EpochGuard``), applied to what ``on_message`` receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from kiosk_core.backoff import full_jitter
from kiosk_core.tasks import TaskSet, wait_for

log = logging.getLogger("kiosk.failover.link")

VERSION = 1
MAX_LINE = 256 * 1024  # a session snapshot is a few KiB; this is far above, and bounded
MAX_REFUSED = 20  # refused lines on one connection before it is dropped
HELLO_TIMEOUT_S = 3.0
WRITE_TIMEOUT_S = 2.0
SEND_QUEUE = 64  # lines waiting for the link; when full, the oldest state line goes (a newer supersedes it)
MESSAGE_TYPES = ("hello", "state", "yield")
MIN_KEY_BYTES = 16


class Refused(ValueError):
    """A line that is not a valid message of the pair; ``reason`` says why (logged, counted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def mac_of(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def encode(key: bytes, body: dict[str, Any]) -> bytes:
    """One signed line (with its newline)."""
    return json.dumps({"body": body, "mac": mac_of(key, body)}, ensure_ascii=False).encode() + b"\n"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(key: bytes, line: bytes) -> dict[str, Any]:
    """The body of a signed line; raises ``Refused`` (the reason) for anything else."""
    if len(line) > MAX_LINE:
        raise Refused(f"line of {len(line)} bytes (over {MAX_LINE})")
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refused(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict) or set(obj) != {"body", "mac"}:
        raise Refused("not a signed message (expected exactly body and mac)")
    body, mac = obj["body"], obj["mac"]
    if not isinstance(body, dict) or not isinstance(mac, str) or len(mac) != 64:
        raise Refused("malformed body or mac")
    try:
        expected = mac_of(key, body)
    except (TypeError, ValueError, RecursionError):
        raise Refused("body cannot be made canonical") from None
    if not hmac.compare_digest(expected, mac.lower()):
        raise Refused("bad mac (wrong pair key, or altered)")
    problem = shape_problem(body)
    if problem:
        raise Refused(problem)
    return body


def _is_int(v: Any, lo: int = 0, hi: int = 2**63 - 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def shape_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a (signed) body's envelope, or None."""
    if body.get("v") != VERSION:
        return f"version {str(body.get('v'))[:20]!r} (this terminal speaks {VERSION})"
    if body.get("type") not in MESSAGE_TYPES:
        return f"unknown type {str(body.get('type'))[:40]!r}"
    sender = body.get("from")
    if not isinstance(sender, str) or not 0 < len(sender) <= 64:
        return "from must be the sender's device id"
    if not _is_int(body.get("seq")) or not _is_int(body.get("epoch")):
        return "seq and epoch must be non-negative integers"
    if body["type"] == "hello":
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            return "hello without a nonce"
    elif not isinstance(body.get("to"), str):
        return "no connection nonce (to)"
    if body["type"] == "state":
        if body.get("role") not in ("active", "standby"):
            return "state: role must be active or standby"
        if not isinstance(body.get("healthy"), bool):
            return "state: healthy must be true or false"
        if body.get("session") is not None and not isinstance(body.get("session"), dict):
            return "state: session must be an object or null"
    return None


def load_key(path: Any) -> bytes:
    """The pair key file's bytes; raises ValueError saying what is wrong (missing, too short)."""
    try:
        key = open(path, "rb").read()  # noqa: SIM115 - tiny file
    except OSError as exc:
        raise ValueError(f"pair key {path}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"pair key {path} has {len(key)} bytes; it needs at least {MIN_KEY_BYTES}")
    return key


class PairLink:
    """Both ends of this terminal's pair link. ``send()`` queues a body (the link adds ``v``, ``from``,
    ``seq`` and ``to``); ``on_message(body)`` is called on the loop for every accepted line."""

    def __init__(
        self,
        *,
        key: bytes,
        device_id: str,
        listen: tuple[str, int],
        peer: tuple[str, int],
        on_message: Callable[[dict[str, Any]], None],
        reconnect_base_s: float = 0.1,
        reconnect_cap_s: float = 2.0,
    ) -> None:
        self.key = key
        self.device_id = device_id
        self.listen = listen
        self.peer = peer
        self.on_message = on_message
        self.reconnect_base_s = reconnect_base_s
        self.reconnect_cap_s = reconnect_cap_s
        self.refused: Counter[str] = Counter()
        self.accepted = 0
        self.sent = 0
        self.too_large = 0
        self.connected = False  # our outgoing connection is up (hello received)
        self.last_error = ""
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet("failover-link", log)
        self._inbound: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        host, port = self.listen
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE + 2)
        log.info("pair link listening on %s:%d, peer %s:%d", host, port, *self.peer)
        self._tasks.spawn(self._connect_loop(), name="failover-link-out")

    @property
    def port(self) -> int:
        """The port actually listened on (``listen`` may say 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._inbound):
                w.close()
            with contextlib.suppress(Exception):
                await wait_for(self._server.wait_closed(), 2)
            self._server = None
        await self._tasks.close()
        self.connected = False

    def send(self, body: dict[str, Any]) -> None:
        """Queue ``body`` for the peer (dropped, oldest state first, when the link is down long)."""
        if len(self._queue) >= SEND_QUEUE:
            for i, old in enumerate(self._queue):
                if old.get("type") == "state":
                    del self._queue[i]
                    break
            else:
                self._queue.popleft()
        self._queue.append(body)
        self._wake.set()

    def refuse(self, where: str, reason: str) -> None:
        """Count and log a refused line (also for the service's epoch rules)."""
        self.refused[reason[:80]] += 1
        log.warning("pair link: refused a line from %s: %s", where, reason)

    # --- receiving (the connections we accept) -----------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        where = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        nonce = secrets.token_hex(16)
        self._inbound.add(writer)
        last_seq = 0
        sender: str | None = None
        refused = 0
        try:
            hello = {"v": VERSION, "type": "hello", "from": self.device_id, "seq": 0, "epoch": 0}
            writer.write(encode(self.key, {**hello, "nonce": nonce}))
            await wait_for(writer.drain(), WRITE_TIMEOUT_S)
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return  # the peer closed
                except asyncio.LimitOverrunError:
                    self.refuse(where, f"line over {MAX_LINE} bytes; connection dropped")
                    return
                try:
                    body = decode(self.key, line)
                    if body["type"] == "hello":
                        raise Refused("hello on an accepted connection")
                    if body["to"] != nonce:
                        raise Refused("not for this connection (a replay from another one)")
                    if body["seq"] <= last_seq:
                        raise Refused(f"seq {body['seq']} not after {last_seq} (a replay)")
                    if body["from"] == self.device_id:
                        raise Refused("our own device id (a reflection)")
                    if sender is not None and body["from"] != sender:
                        raise Refused(f"sender changed from {sender} mid-connection")
                except Refused as exc:
                    refused += 1
                    self.refuse(where, exc.reason)
                    if refused >= MAX_REFUSED:
                        log.warning("pair link: %s dropped after %d refused lines", where, refused)
                        return
                    continue
                last_seq, sender = body["seq"], body["from"]
                self.accepted += 1
                try:
                    self.on_message(body)
                except Exception:  # noqa: BLE001 - the receiver's bug must not take the link down
                    log.exception("pair link: handling a message failed")
        except (OSError, TimeoutError) as exc:
            log.info("pair link: inbound %s closed: %s", where, exc)
        finally:
            self._inbound.discard(writer)
            writer.close()

    # --- sending (the connection we make) ----------------------------------------------------------

    async def _connect_loop(self) -> None:
        attempt = 0
        host, port = self.peer
        while True:
            try:
                reader, writer = await wait_for(
                    asyncio.open_connection(host, port, limit=MAX_LINE + 2), HELLO_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                self._note_down(f"connect {host}:{port}: {exc or type(exc).__name__}")
            else:
                try:
                    if await self._session(reader, writer):
                        attempt = 0
                except Refused as exc:  # the peer's hello: wrong key, not the pair's protocol
                    self.refuse(f"{host}:{port}", exc.reason)
                    self._note_down(f"{host}:{port}: {exc.reason}")
                except (OSError, TimeoutError) as exc:
                    self._note_down(f"{host}:{port}: {exc or type(exc).__name__}")
                finally:
                    self.connected = False
                    writer.close()
            await asyncio.sleep(full_jitter(attempt, self.reconnect_base_s, self.reconnect_cap_s))
            attempt += 1

    def _note_down(self, error: str) -> None:
        if error != self.last_error:
            log.warning("pair link to the peer down: %s", error)
        self.last_error = error

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            line = await wait_for(reader.readuntil(b"\n"), HELLO_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise Refused(f"no hello from the peer ({type(exc).__name__})") from None
        hello = decode(self.key, line)
        if hello["type"] != "hello":
            raise Refused("the peer did not start with hello")
        nonce = hello["nonce"]
        self.connected = True
        if self.last_error:
            log.info("pair link to the peer up (%s)", hello["from"])
        self.last_error = ""
        seq = 0
        closed = asyncio.ensure_future(reader.read(1))  # the accepting side never writes after hello
        try:
            while True:
                while self._queue:
                    body = self._queue[0]
                    seq += 1
                    out = {**body, "v": VERSION, "from": self.device_id, "seq": seq, "to": nonce}
                    data = encode(self.key, out)
                    if len(data) > MAX_LINE:  # the peer would drop the link for it, again and again
                        log.error(
                            "pair link: a %s line of %d bytes not sent (over %d)",
                            body.get("type"),
                            len(data),
                            MAX_LINE,
                        )
                        self.too_large += 1
                        self._queue.popleft()
                        seq -= 1
                        continue
                    writer.write(data)
                    await wait_for(writer.drain(), WRITE_TIMEOUT_S)
                    self._queue.popleft()
                    self.sent += 1
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    done, _ = await asyncio.wait({waker, closed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                if closed in done:
                    raise ConnectionResetError("the peer closed the connection")
        finally:
            closed.cancel()
        return True
