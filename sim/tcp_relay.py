"""A TCP relay on the loopback of the calling thread's namespace, for the call's signalling in the lab.

The kiosk allows plain ``http://``/``ws://`` media servers on loopback only (TLS elsewhere); in the
impaired-link test and benchmark the county's Janus is across the village link, so the kiosk talks to
this relay on 127.0.0.1, whose far side crosses that link like any other traffic.
"""

from __future__ import annotations

import asyncio
import contextlib

CONNECT_TIMEOUT_S = 4.0


async def start_tcp_relay(host: str, port: int, *, listen_port: int = 0) -> asyncio.Server:
    """Listen on 127.0.0.1:``listen_port`` (0: a free one, see ``server.sockets``) and relay each
    connection to ``host:port``; sockets are made in the calling thread's namespace."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    return await asyncio.start_server(serve, "127.0.0.1", listen_port)
