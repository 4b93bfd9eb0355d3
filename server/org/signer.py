"""Who signs for the organisation: its key file, or the ``ssh-agent`` that holds the key.

Both give raw Ed25519 signatures (an ``ssh-agent`` signs the exact bytes it is given, and an
Ed25519 signature in the SSH format is the raw 64 bytes after the algorithm name), so
certificates and revocation lists are the same whichever signs. A PKCS#11 token (a YubiKey,
a smart card, an HSM) is reached through ``ssh-agent``: ``ssh-add -s /path/to/pkcs11.so``
loads its keys into the agent, and the private key never leaves the token.
"""

from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import OrgError

_ED25519 = b"ssh-ed25519"


class Signer(Protocol):
    """Signs bytes with the organisation key."""

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``data``."""
        ...


@dataclass(frozen=True)
class KeyFileSigner:
    """The organisation key from its OpenSSH private key file (``org.key``)."""

    key: Ed25519PrivateKey

    @classmethod
    def load(cls, path: Path) -> KeyFileSigner:
        try:
            key = serialization.load_ssh_private_key(path.read_bytes(), None)
        except FileNotFoundError:
            raise OrgError(f"{path} does not exist: this directory holds no organisation "
                           "private key; sign through ssh-agent (--agent) or use the "
                           "directory made by `hw-org init`") from None
        except (OSError, ValueError, TypeError) as exc:
            raise OrgError(f"cannot read the organisation key {path} ({type(exc).__name__}); "
                           "it must be an unencrypted OpenSSH Ed25519 key (`hw-org init`), "
                           "or load it into ssh-agent and pass --agent") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise OrgError(f"{path} is not an Ed25519 key; the organisation key must be one")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(data):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", data[at:at + 4])
    if at + 4 + n > len(data):
        raise ValueError("truncated")
    return data[at + 4:at + 4 + n], at + 4 + n


class AgentSigner:
    """The organisation key held by the ``ssh-agent`` at ``SSH_AUTH_SOCK`` (a key loaded with
    ``ssh-add``, or a token's key loaded with ``ssh-add -s PKCS11_PROVIDER``)."""

    def __init__(self, org_pub: bytes, socket_path: str | None = None) -> None:
        self.org_pub = org_pub
        path = socket_path if socket_path is not None else os.environ.get("SSH_AUTH_SOCK", "")
        if not path:
            raise OrgError("--agent needs a running ssh-agent: SSH_AUTH_SOCK is not set; start "
                           "one (`eval $(ssh-agent)`) and load the organisation key "
                           "(`ssh-add org.key`, or `ssh-add -s PKCS11_PROVIDER` for a token)")
        self.path = path

    def sign(self, data: bytes) -> bytes:
        return asyncio.run(self._sign(data))

    async def _sign(self, data: bytes) -> bytes:
        import asyncssh

        blob = struct.pack(">I", len(_ED25519)) + _ED25519 + struct.pack(">I", 32) + self.org_pub
        try:
            agent = await asyncssh.connect_agent(self.path)
        except (OSError, asyncssh.Error) as exc:
            raise OrgError(f"cannot reach the ssh-agent at SSH_AUTH_SOCK "
                           f"({type(exc).__name__}); is it running?") from None
        try:
            keys = await agent.get_keys()
            key = next((k for k in keys if isinstance(k, asyncssh.SSHAgentKeyPair)
                        and k.key_public_data == blob), None)
            if key is None:
                raise OrgError("the ssh-agent does not hold the organisation key (org.pub of "
                               "this directory); load it with `ssh-add org.key` or `ssh-add "
                               "-s PKCS11_PROVIDER` for a token, and check with `ssh-add -L`")
            try:
                answer = await key.sign_async(data)
            except (OSError, ValueError, asyncssh.Error) as exc:
                raise OrgError(f"the ssh-agent refused to sign ({type(exc).__name__}); a "
                               "token may need its PIN or a touch, or the key was added with "
                               "a confirmation constraint that was declined") from None
        finally:
            agent.close()
            await agent.wait_closed()
        try:
            algorithm, at = _string(answer, 0)
            signature, _ = _string(answer, at)
        except ValueError:
            signature, algorithm = b"", b""
        if algorithm != _ED25519 or len(signature) != 64:
            raise OrgError("the ssh-agent answered with a signature that is not Ed25519")
        return signature
