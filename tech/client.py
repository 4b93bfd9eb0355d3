"""The technician's client: connect with the certified key, send requests, await replies."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from proto import MAX_FRAME_SIZE
from proto import messages as m
from proto.command import Command, FanoutCommand, sign_command, sign_fanout
from proto.errors import ProtocolError
from proto.session import ClientSession

from .errors import TechError

SOFTWARE = f"hw-tech/{metadata.version('helloword-support')}"
#: How long a signed command stays valid (the agent refuses it afterwards).
COMMAND_LIFETIME = timedelta(minutes=5)


@dataclass(frozen=True)
class Profile:
    home: Path
    name: str
    urls: list[str]

    @classmethod
    def load(cls, home: Path) -> Profile:
        try:
            data = json.loads((home / "profile.json").read_text(encoding="utf-8"))
            return cls(home=home, name=data["name"], urls=list(data["urls"]))
        except FileNotFoundError:
            raise TechError(f"{home} is not a technician home; an operator creates one with "
                            f"`hw-server tech add NAME --out {home}`") from None
        except (ValueError, KeyError, TypeError):
            raise TechError(f"{home / 'profile.json'} is damaged; ask for a new one") from None

    def key(self) -> Ed25519PrivateKey:
        key = serialization.load_ssh_private_key((self.home / "tech.key").read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise TechError("tech.key is not an Ed25519 key")
        return key

    def certificate(self) -> str:
        return (self.home / "tech.key-cert.pub").read_text(encoding="ascii").strip()

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=str(self.home / "ca.crt"))
        return ctx


class TechClient:
    """One authenticated technician session. Use as ``async with TechClient(profile)``."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.ws: ClientConnection | None = None
        self.session = ClientSession(role=m.Role.TECH, identity=profile.name)
        self._cached_key: Ed25519PrivateKey | None = None

    async def __aenter__(self) -> TechClient:
        errors = []
        for base in self.profile.urls:
            try:
                self.ws = await connect(base.rstrip("/") + "/tech",
                                        ssl=self.profile.ssl_context(), compression=None,
                                        max_size=MAX_FRAME_SIZE, open_timeout=10,
                                        max_queue=4, write_limit=512 * 1024,
                                        user_agent_header=SOFTWARE, close_timeout=5)
                break
            except ssl.SSLCertVerificationError as exc:
                errors.append(f"{base}: certificate not from the pinned CA "
                              f"({exc.verify_message})")
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                errors.append(f"{base}: {exc}")
        if self.ws is None:
            raise TechError("cannot reach the support server: " + "; ".join(errors))
        try:
            await self.ws.send(self.session.hello(software=SOFTWARE,
                                                  certificate=self.profile.certificate()),
                               text=True)
            self.session.receive(await self.ws.recv(decode=False))
            sig = self.profile.key().sign(self.session.proof_payload())
            await self.ws.send(self.session.prove(sig), text=True)
            self.session.receive(await self.ws.recv(decode=False))
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
            raise TechError(f"the server refused this technician: {reason}") from None
        except ProtocolError as exc:
            raise TechError(f"protocol error: {exc.reason}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            try:
                await self.ws.send(self.session.send(m.Bye(reason="done")), text=True)
            except (ConnectionClosed, ProtocolError):
                pass
            await self.ws.close()

    async def call(self, msg: Any) -> m.AnyMessage:
        """Send a request and return its reply. Raises TechError for an ``Error`` reply."""
        assert self.ws is not None
        wait = float(getattr(msg, "timeout", 0.0)) + 30.0
        try:
            async with asyncio.timeout(wait):
                await self.ws.send(self.session.send(msg), text=True)
                while True:
                    reply = self.session.receive(await self.ws.recv(decode=False))
                    if getattr(reply, "re", None) == msg.id:
                        break
        except TimeoutError:
            raise TechError(f"no answer from the server within {wait:g}s; retry later") from None
        except ProtocolError as exc:
            raise TechError(f"protocol error from the server: {exc.reason}") from None
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
            raise TechError(f"the server closed the connection: {reason}") from None
        if isinstance(reply, m.Error):
            raise TechError(f"{reply.code.value}: {reply.message}")
        return reply

    @staticmethod
    def new_id() -> str:
        return "tq-" + secrets.token_hex(6)

    async def agent_of(self, case: str) -> str:
        """The agent a case belongs to (commands are signed for that agent)."""
        reply = await self.call(m.GetCase(id=self.new_id(), case=case))
        assert isinstance(reply, m.CaseDetail)
        return reply.case.agent_id

    def sign(self, *, agent_id: str, case: str, action: m.Action,
             args: dict[str, Any] | None = None, lifetime: timedelta = COMMAND_LIFETIME
             ) -> m.SignedCommand:
        """Sign a command with this technician's key, bound to agent, case and a nonce."""
        now = datetime.now(UTC)
        command = Command(agent_id=agent_id, case=case, action=action.value,
                          tech=self.profile.name, nonce=secrets.token_bytes(16), issued_at=now,
                          expires_at=now + lifetime, args=args or {})
        return sign_command(command, certificate=self.profile.certificate(),
                            key=self._key)

    def sign_fanout(self, audience: str, lifetime: timedelta = COMMAND_LIFETIME
                    ) -> m.SignedCommand:
        """Sign a fan-out ping for ``audience`` (``all`` or ``customer:NAME``)."""
        now = datetime.now(UTC)
        command = FanoutCommand(audience=audience, action="ping", tech=self.profile.name,
                                nonce=secrets.token_bytes(16), issued_at=now,
                                expires_at=now + lifetime)
        return sign_fanout(command, certificate=self.profile.certificate(), key=self._key)

    @property
    def _key(self) -> Ed25519PrivateKey:
        if self._cached_key is None:
            self._cached_key = self.profile.key()
        return self._cached_key
