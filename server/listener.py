"""The listening side before TLS: count each address's connections, then start TLS.

``websockets.asyncio.server.serve`` normally hands ``ssl=`` to ``loop.create_server``, so the
first code of ours to see a connection runs after its TLS handshake: a client that opens
thousands of TCP connections and never sends a ClientHello holds a descriptor each, and
the server sees nothing of it. Here the server is created without ``ssl`` and every
connection is a :class:`GuardedConnection` (websockets' ``create_connection`` hook): its
``connection_made`` runs on the raw TCP connection, asks the
:class:`~server.admission.AddressLimit` and either closes it at once (with a reset, before
any TLS work) or upgrades it with ``loop.start_tls`` (``tls_timeout``: the TLS handshake
timeout) and only then hands it to websockets. Works on the stock asyncio loop and uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any, cast

from websockets.asyncio.server import ServerConnection

from .admission import AddressLimit

log = logging.getLogger("hw.server.listener")

#: Seconds a TLS close-notify exchange may take.
TLS_SHUTDOWN_TIMEOUT = 5.0


@dataclass
class Guard:
    """What every connection of one listener shares."""

    limit: AddressLimit
    ssl_context: ssl.SSLContext
    tls_timeout: float
    #: TLS handshakes in progress (cancelled on shutdown)
    handshaking: set[asyncio.Task[None]] = field(default_factory=set)

    def connection_class(self) -> type[GuardedConnection]:
        """The ``create_connection`` to give ``serve`` (a subclass bound to this guard)."""
        class Guarded(GuardedConnection):
            pass

        Guarded.guard = self
        return Guarded

    def cancel_handshakes(self) -> None:
        for task in list(self.handshaking):
            task.cancel()


class GuardedConnection(ServerConnection):
    """A websockets server connection that is counted per address before TLS and does its
    own TLS handshake (see the module docstring)."""

    guard: Guard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._secured = False
        self._early: list[bytes] = []  # decrypted bytes that came before we handed over
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.guard.limit.open(self, address):
            _reset(transport)
            return
        transport = cast(asyncio.Transport, transport)
        transport.pause_reading()  # the ClientHello waits in the kernel until start_tls
        task = asyncio.get_running_loop().create_task(self._secure(transport))
        self.guard.handshaking.add(task)
        task.add_done_callback(self.guard.handshaking.discard)

    async def _secure(self, raw: asyncio.Transport) -> None:
        guard = self.guard
        ok = False
        try:
            secured = await asyncio.get_running_loop().start_tls(
                raw, self, guard.ssl_context, server_side=True,
                ssl_handshake_timeout=guard.tls_timeout,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT)
            ok = secured is not None
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("TLS handshake failed: %s", type(exc).__name__)
        finally:
            if not ok:
                raw.abort()
                guard.limit.closed(self)
        if not ok:
            return
        assert secured is not None
        self._secured = True
        super().connection_made(secured)
        early, self._early = self._early, []
        for data in early:
            super().data_received(data)
        if self._early_eof:
            super().eof_received()

    def data_received(self, data: bytes) -> None:
        if not self._secured:  # TLS finished but start_tls has not returned yet
            self._early.append(data)
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if not self._secured:
            self._early_eof = True
            return
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.limit.closed(self)
        if self._secured:
            super().connection_lost(exc)


def _reset(transport: asyncio.BaseTransport) -> None:
    transport = cast(asyncio.Transport, transport)
    """Close a refused connection with a reset: no TIME_WAIT kept for it on this side."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
