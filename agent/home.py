"""An agent home: ``agent.json`` (identity and servers), ``agent.key``, the pinned ``ca.crt``."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import NotEnrolled

STATE = "agent.json"


@dataclass(frozen=True)
class AgentState:
    agent_id: str
    urls: list[str]
    customer: str
    ca_sha256: str
    org_pub: str
    enrolled_at: str


class AgentHome:
    """Paths and loaders for one agent home directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def enrolled(self) -> bool:
        return (self.path / STATE).is_file()

    def state(self) -> AgentState:
        try:
            data = json.loads((self.path / STATE).read_text(encoding="utf-8"))
            return AgentState(**data)
        except FileNotFoundError:
            raise NotEnrolled(f"{self.path} holds no enrollment; run `hw-agent enroll --home "
                              f"{self.path} TOKEN` with the token HelloWord gave you") from None
        except (ValueError, TypeError):
            raise NotEnrolled(f"{self.path / STATE} is damaged; enroll again in a new "
                              "home with a new token") from None

    def key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key((self.path / "agent.key").read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise NotEnrolled(f"{self.path / 'agent.key'} is not an Ed25519 key; enroll again")
        return key

    def save(self, state: AgentState, key: Ed25519PrivateKey) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        keyfile = self.path / "agent.key"
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        tmp = self.path / (STATE + ".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path / STATE)

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.3, trusting only the pinned CA, with hostname checking.

        The CA file is checked against the fingerprint recorded at enrollment first, so a
        swapped or extended ``ca.crt`` is refused rather than trusted.
        """
        cafile = self.path / "ca.crt"
        try:
            certs = x509.load_pem_x509_certificates(cafile.read_bytes())
        except (OSError, ValueError):
            certs = []
        digest = (hashlib.sha256(certs[0].public_bytes(serialization.Encoding.DER)).hexdigest()
                  if len(certs) == 1 else "")
        if digest != self.state().ca_sha256:
            raise NotEnrolled(f"{cafile} is not the CA pinned at enrollment; refusing to trust "
                              "it (restore it or enroll again with a new token)")
        return pinned_context(cafile)

    @property
    def db_path(self) -> Path:
        return self.path / "agent.db"


def pinned_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(cafile))
    return ctx
