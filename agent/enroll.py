"""Redeem an enrollment token: pin the CA, make the agent key, register with the server."""

from __future__ import annotations

import asyncio
import hashlib
import platform
import socket
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosed

from proto import MAX_VERSION, MIN_VERSION
from proto import messages as m
from proto.errors import ProtocolError
from proto.session import ClientSession
from proto.token import EnrollToken

from .connection import SOFTWARE, close_text, open_ws
from .errors import EnrollError, Unreachable
from .home import AgentHome, AgentState, pinned_context

MAX_CA_BYTES = 64 * 1024


def fetch_ca(url: str, *, timeout: float = 10.0) -> bytes:
    """GET ``/ca.pem`` over TLS *without* trusting it yet; the caller checks its hash."""
    parts = urlsplit(url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # authenticated below by the token's fingerprint
    try:
        with urllib.request.urlopen(f"https://{parts.netloc}/ca.pem", context=ctx,
                                    timeout=timeout) as resp:
            return bytes(resp.read(MAX_CA_BYTES))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise Unreachable(f"{url}: cannot fetch the CA certificate ({exc})") from None


def check_ca(pem: bytes, expected: bytes, url: str) -> bytes:
    """Refuse unless the server sent exactly one certificate whose SHA-256 (DER) is the one
    the token pins; return that certificate alone, re-encoded, to be the only trust anchor."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise EnrollError(f"{url} did not serve a CA certificate; is it a HelloWord "
                          "server?") from None
    if len(certs) != 1:
        raise EnrollError(f"{url} served {len(certs)} certificates where exactly one CA "
                          "certificate belongs; not connecting")
    der = certs[0].public_bytes(serialization.Encoding.DER)
    got = hashlib.sha256(der).digest()
    if got != expected:
        raise EnrollError(
            f"the server at {url} presents CA fingerprint {got.hex()[:16]}..., but the token "
            f"pins {expected.hex()[:16]}...: the token is not for this server, or the "
            "connection is being intercepted. Not connecting; ask HelloWord for a new token.")
    return certs[0].public_bytes(serialization.Encoding.PEM)


def enroll(home: AgentHome, token: EnrollToken) -> AgentState:
    """Enroll this machine into ``home``. Raises EnrollError/Unreachable; writes on success."""
    if home.enrolled:
        raise EnrollError(f"{home.path} is already enrolled as {home.state().agent_id}; use "
                          "another --home to enroll again")
    errors: list[str] = []
    for url in token.urls:
        try:
            pem = fetch_ca(url)
        except Unreachable as exc:
            errors.append(str(exc))
            continue
        pem = check_ca(pem, token.ca_sha256, url)
        created = not home.path.exists()
        home.path.mkdir(parents=True, exist_ok=True)
        cafile = home.path / "ca.crt"
        cafile.write_bytes(pem)
        key = Ed25519PrivateKey.generate()
        try:
            agent_id, customer = asyncio.run(_redeem(url, cafile, token, key))
        except BaseException as exc:
            cafile.unlink(missing_ok=True)  # a refused enrollment leaves nothing behind
            if created and not any(home.path.iterdir()):
                home.path.rmdir()
            if isinstance(exc, Unreachable):
                errors.append(str(exc))
                continue
            raise
        state = AgentState(agent_id=agent_id, urls=list(token.urls), customer=customer,
                           ca_sha256=token.ca_sha256.hex(), org_pub=token.org_pub.hex(),
                           enrolled_at=datetime.now(UTC).isoformat())
        home.save(state, key)
        return state
    raise Unreachable("could not reach any server in the token: " + "; ".join(errors))


async def _redeem(url: str, cafile: Path, token: EnrollToken, key: Ed25519PrivateKey
                  ) -> tuple[str, str]:
    ws = await open_ws(url.rstrip("/") + "/agent", pinned_context(cafile), ping=None)
    session = ClientSession(role=m.Role.AGENT, identity="enrolling")
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    try:
        await ws.send(session.enroll(m.Enroll(
            min_version=MIN_VERSION, max_version=MAX_VERSION, software=SOFTWARE,
            secret=token.secret, public_key=public, hostname=socket.gethostname()[:128],
            os=f"{platform.system()} {platform.release()}"[:128])), text=True)
        reply = session.receive(await ws.recv(decode=False))
    except ConnectionClosed as exc:
        raise EnrollError(f"enrollment refused: {close_text(exc)}") from None
    except ProtocolError as exc:
        raise EnrollError(f"enrollment failed: {exc.reason}") from None
    finally:
        await ws.close()
    if isinstance(reply, m.Error):
        raise EnrollError(f"enrollment refused: {reply.message}")
    assert isinstance(reply, m.Enrolled)
    return reply.agent_id, reply.customer
