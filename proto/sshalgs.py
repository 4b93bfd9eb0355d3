"""The SSH algorithms spoken inside a tunnel: one modern set for both ends.

The agent's SSH server (``agent/tunnel.py``) offers exactly this set and the technician's
client (``tech/ssh.py``) asks for exactly it; only our own client and current OpenSSH ever
connect, so nothing legacy is offered: no SHA-1, no encrypt-and-MAC, no NIST curves, no
CBC/CTR (``docs/security.md#ssh-algorithms``). Sans-I/O: the caller says which key
exchanges its SSH library implements.
"""

from __future__ import annotations

from collections.abc import Collection

#: Key exchange, strongest first; the post-quantum hybrids where the library has them.
KEX_ALGS: tuple[str, ...] = (
    "mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256", "curve25519-sha256@libssh.org")
#: Ciphers: AEAD only (they carry their own integrity, so no MAC is used with them).
ENCRYPTION_ALGS: tuple[str, ...] = (
    "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com")
#: MACs: encrypt-then-MAC with SHA-2 only (negotiated only by a peer without AEAD ciphers).
MAC_ALGS: tuple[str, ...] = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
#: Host key: the agent's Ed25519 identity key is its only one.
HOST_KEY_ALGS: tuple[str, ...] = ("ssh-ed25519",)


def modern_set(supported_kex: Collection[str]) -> dict[str, list[str]]:
    """asyncssh options (``kex_algs``, ``encryption_algs``, ``mac_algs``) for exactly the set
    above, leaving out the key exchanges not in ``supported_kex``."""
    return {"kex_algs": [alg for alg in KEX_ALGS if alg in supported_kex],
            "encryption_algs": list(ENCRYPTION_ALGS), "mac_algs": list(MAC_ALGS)}
