"""The organisation directory of ``hw-org``: the key pair and the records of what it signed.

::

    DIR/org.key             the Ed25519 private key, OpenSSH format, 0600 (absent when the key
                            lives in ssh-agent or a token: ``hw-org init --public-key``)
    DIR/org.pub             its public half (what ``hw-server init --org-pub`` takes)
    DIR/issued.jsonl        one line per certificate signed: name, fingerprint, serial, roles,
                            validity (``revoke --name`` finds a technician's keys here)
    DIR/revoked.json        the revoked keys: fingerprint -> name, when
    DIR/sequence            the last revocation list's sequence number (never reused)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .certificate import Signed
from .errors import OrgError
from .signer import AgentSigner, KeyFileSigner, Signer


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class OrgDir:
    path: Path

    @classmethod
    def create(cls, path: Path, *, public_key: bytes | None = None) -> OrgDir:
        """Make the directory with a new key pair, or with ``public_key`` only (its private
        half in ssh-agent or a token).

        Raises:
            OrgError: the directory already holds an organisation key, or ``public_key`` is
                not an OpenSSH Ed25519 public key.
        """
        if (path / "org.pub").exists() or (path / "org.key").exists():
            raise OrgError(f"{path} already holds an organisation key; a new one would "
                           "invalidate every agent and technician. Use another directory")
        pub_line: bytes
        if public_key is not None:
            try:
                pub = serialization.load_ssh_public_key(public_key.strip())
            except (ValueError, TypeError):
                pub = None
            if not isinstance(pub, Ed25519PublicKey):
                raise OrgError("--public-key must be an OpenSSH Ed25519 public key line "
                               "(`ssh-add -L` prints the ones ssh-agent holds)")
            pub_line = pub.public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        if public_key is None:
            key = Ed25519PrivateKey.generate()
            _write_private(path / "org.key", key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption()))
            pub_line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH)
        (path / "org.pub").write_bytes(pub_line + b" helloword-org\n")
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> OrgDir:
        if not (path / "org.pub").is_file():
            raise OrgError(f"{path} is not an organisation directory (no org.pub); make one "
                           "with `hw-org init DIR` or pass --dir")
        return cls(path)

    @property
    def org_pub(self) -> bytes:
        try:
            pub = serialization.load_ssh_public_key((self.path / "org.pub").read_bytes())
        except (OSError, ValueError) as exc:
            raise OrgError(f"cannot read {self.path / 'org.pub'} ({type(exc).__name__})"
                           ) from None
        if not isinstance(pub, Ed25519PublicKey):
            raise OrgError(f"{self.path / 'org.pub'} is not an Ed25519 key")
        return pub.public_bytes_raw()

    def signer(self, *, agent: bool) -> Signer:
        """The key file, or the ssh-agent (``agent``) holding the key of ``org.pub``."""
        if agent:
            return AgentSigner(self.org_pub)
        key = KeyFileSigner.load(self.path / "org.key")
        if key.key.public_key().public_bytes_raw() != self.org_pub:
            raise OrgError(f"{self.path / 'org.key'} does not match org.pub; restore the "
                           "pair from your backup")
        return key

    # -- records ----------------------------------------------------------------------

    def record_issued(self, signed: Signed, *, now: datetime) -> None:
        line = {"name": signed.name, "fingerprint": signed.fingerprint,
                "serial": signed.serial, "roles": signed.roles,
                "valid_before": signed.valid_before.isoformat(), "signed_at": now.isoformat()}
        with (self.path / "issued.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    def issued(self) -> list[dict[str, Any]]:
        try:
            text = (self.path / "issued.jsonl").read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def revoked(self) -> dict[str, dict[str, str]]:
        try:
            data: dict[str, dict[str, str]] = json.loads(
                (self.path / "revoked.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            raise OrgError(f"{self.path / 'revoked.json'} is damaged; restore it from your "
                           "backup") from None
        return data

    def revoke(self, fingerprints: dict[str, str], *, now: datetime) -> list[str]:
        """Add ``fingerprints`` (-> name) to the revoked keys; returns those newly added."""
        held = self.revoked()
        new = [fp for fp in fingerprints if fp not in held]
        for fp in new:
            held[fp] = {"name": fingerprints[fp], "at": now.isoformat()}
        _atomic(self.path / "revoked.json",
                (json.dumps(held, indent=2, sort_keys=True) + "\n").encode())
        return new

    def next_sequence(self) -> int:
        """One more than the last list's (the clock-independent counter)."""
        try:
            last = int((self.path / "sequence").read_text(encoding="ascii").strip())
        except FileNotFoundError:
            last = 0
        except (OSError, ValueError):
            raise OrgError(f"{self.path / 'sequence'} is damaged; write into it a number "
                           "higher than the last list's (`hw-server revocations show`)") from None
        return last + 1

    def used_sequence(self, sequence: int) -> None:
        _atomic(self.path / "sequence", f"{sequence}\n".encode())
