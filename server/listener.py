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

``start_tls`` must take the transport over inside ``connection_made``: uvloop starts
reading as soon as ``connection_made`` returns (a ``pause_reading`` there is undone), and
a ClientHello read by the plain protocol is lost to TLS. So its first step (pause, swap in
the TLS protocol) runs at once, as a 3.12 eager task would, and the rest as a task
(:func:`_start_now`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from websockets.asyncio.server import ServerConnection

from .admission import AddressLimit

log = logging.getLogger("hw.server.listener")
T = TypeVar("T")

#: Seconds a TLS close-notify exchange may take.
TLS_SHUTDOWN_TIMEOUT = 5.0


@dataclass
class Guard:
    """What every connection of one listener shares."""

    limit: AddressLimit
    ssl_context: ssl.SSLContext
    tls_timeout: float
    #: TLS handshakes in progress (cancelled on shutdown)
    handshaking: set[asyncio.Future[None]] = field(default_factory=set)

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
        try:
            task = _start_now(self._secure(transport))
        except Exception as exc:  # start_tls refused the transport at once
            log.warning("cannot start TLS on a new connection: %s", exc)
            self.guard.limit.closed(self)
            transport.abort()
            return
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


def _start_now(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    """Run ``coro`` up to its first suspension now, then on as a task."""
    try:
        first = coro.send(None)
    except StopIteration:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    return asyncio.ensure_future(_Resumed(coro, first))


class _Resumed:
    """The rest of a coroutine whose first step already ran: awaiting this drives it on as
    ``await coro`` would have (values and exceptions, cancellation included, pass through)."""

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self._coro, self._first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._first
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # handed to the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value
