"""Dial the server, prove the agent key, return a ready session (``docs/protocol.md#handshake``)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from plugins.system import agent_version
from proto import MAX_FRAME_SIZE
from proto import messages as m
from proto.errors import CloseCode, ProtocolError
from proto.session import ClientSession

from .backoff import parse_retry_after
from .errors import Refused, Unreachable

SOFTWARE = f"hw-agent/{agent_version()}"
#: Close codes after which retrying cannot help.
FATAL = {int(CloseCode.AUTH_FAILED), int(CloseCode.UNSUPPORTED_VERSION),
         int(CloseCode.ENROLL_REFUSED)}


@dataclass
class Link:
    ws: ClientConnection
    session: ClientSession
    url: str

    async def send(self, msg: m.AnyMessage) -> None:
        await self.ws.send(self.session.send(msg), text=True)

    async def recv(self) -> m.AnyMessage:
        return self.session.receive(await self.ws.recv(decode=False))


def close_text(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        return f"server closed the connection ({exc.rcvd.code}: {exc.rcvd.reason or 'no reason'})"
    return "connection lost"


async def open_ws(url: str, ctx: ssl.SSLContext, *, ping: float | None = 20
                  ) -> ClientConnection:
    """One TLS websocket to ``url``; Unreachable on network or TLS failure."""
    try:
        return await connect(url, ssl=ctx, compression=None, max_size=MAX_FRAME_SIZE,
                             max_queue=4, write_limit=512 * 1024,  # a tunnel's frames
                             open_timeout=10, ping_interval=ping, ping_timeout=20,
                             user_agent_header=SOFTWARE, close_timeout=5)
    except InvalidStatus as exc:
        status = exc.response.status_code
        wait = parse_retry_after(exc.response.headers.get("Retry-After"))
        if status in (429, 503) and wait is not None:
            raise Unreachable(f"{url}: the server is busy (HTTP {status}) and asked to retry "
                              f"in {wait:g}s", retry_after=wait) from None
        raise Unreachable(f"{url}: cannot connect ({type(exc).__name__}: {exc})") from None
    except ssl.SSLCertVerificationError as exc:
        raise Unreachable(f"{url}: the server's certificate is not from the CA pinned at "
                          f"enrollment ({exc.verify_message}); not connecting") from None
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise Unreachable(f"{url}: cannot connect ({type(exc).__name__}: {exc})") from None


async def dial(urls: list[str], ctx: ssl.SSLContext, *, agent_id: str,
               key: Ed25519PrivateKey, mode: m.Mode, tunnel: str | None = None) -> Link:
    """Try each server URL in turn; authenticate on the first that answers (``tunnel``:
    the tunnel id a ``tunnel``-mode connection is for).

    Raises:
        Unreachable: no URL answered (retry later).
        Refused: the server refused this agent (do not retry blindly).
    """
    errors: list[str] = []
    waits: list[float] = []
    for base in urls:
        url = base.rstrip("/") + "/agent"
        try:
            ws = await open_ws(url, ctx, ping=20 if mode is m.Mode.RUN else None)
        except Unreachable as exc:
            errors.append(str(exc))
            if exc.retry_after is not None:
                waits.append(exc.retry_after)
            continue
        session = ClientSession(role=m.Role.AGENT, identity=agent_id)
        try:
            await ws.send(session.hello(software=SOFTWARE, mode=mode, tunnel=tunnel),
                          text=True)
            challenge = session.receive(await ws.recv(decode=False))
            assert isinstance(challenge, m.Challenge)
            await ws.send(session.prove(key.sign(session.proof_payload())), text=True)
            welcome = session.receive(await ws.recv(decode=False))
            assert isinstance(welcome, m.Welcome)
            return Link(ws, session, base)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code in FATAL:
                raise Refused(close_text(exc)) from None
            errors.append(f"{url}: {close_text(exc)}")
        except ProtocolError as exc:
            await ws.close(int(exc.close_code), exc.reason[:120])
            errors.append(f"{url}: protocol error: {exc.reason}")
    raise Unreachable("; ".join(errors) or "no server URL configured",
                      retry_after=min(waits) if waits else None)
