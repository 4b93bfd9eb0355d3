"""proto.sealed: a recording sealed to the recording public key opens only with its private
half and only for the agent, case and recording it was sealed for."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from proto import sealed

AD = sealed.associated_data("ag-1", "HW-20261206-0001", "rec-1")


def _seal(key: X25519PrivateKey, data: bytes, ad: bytes = AD) -> bytes:
    return sealed.seal(key.public_key(), data, ad, ephemeral=X25519PrivateKey.generate(),
                       nonce=os.urandom(12))


def test_sealed_opens_with_the_private_key_only() -> None:
    key = X25519PrivateKey.generate()
    data = b'{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "secret"]\n'
    blob = _seal(key, data)
    assert b"secret" not in blob and sealed.is_sealed(blob)
    assert len(blob) == len(data) + sealed.OVERHEAD
    assert sealed.open_sealed(key, blob, AD) == data
    assert sealed.sealed_key_id(blob) == sealed.key_id(key.public_key())
    other = X25519PrivateKey.generate()
    with pytest.raises(sealed.SealError, match="sealed to recording key"):
        sealed.open_sealed(other, blob, AD)


def test_sealed_is_bound_to_agent_case_and_recording() -> None:
    key = X25519PrivateKey.generate()
    blob = _seal(key, b"data\n")
    for ad in (sealed.associated_data("ag-2", "HW-20261206-0001", "rec-1"),
               sealed.associated_data("ag-1", "HW-20261206-0002", "rec-1"),
               sealed.associated_data("ag-1", "HW-20261206-0001", "rec-2")):
        with pytest.raises(sealed.SealError, match="does not authenticate"):
            sealed.open_sealed(key, blob, ad)
    damaged = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(sealed.SealError, match="does not authenticate"):
        sealed.open_sealed(key, damaged, AD)
    with pytest.raises(sealed.SealError, match="not a sealed recording"):
        sealed.open_sealed(key, b"data\n", AD)


def test_key_files_round_trip_and_wrong_files_are_named() -> None:
    key = X25519PrivateKey.generate()
    again = sealed.load_private(sealed.private_pem(key))
    pub = sealed.load_public(sealed.public_pem(key.public_key()))
    assert sealed.key_id(again.public_key()) == sealed.key_id(pub)
    with pytest.raises(sealed.SealError, match="not a recording private key"):
        sealed.load_private(b"garbage")
    with pytest.raises(sealed.SealError, match="not a recording public key"):
        sealed.load_public(sealed.private_pem(key))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl on this machine")
def test_a_key_pair_made_with_stock_openssl_works(tmp_path: Path) -> None:
    """docs/security.md: the pair can be made offline with stock openssl."""
    priv, pub = tmp_path / "recording.key", tmp_path / "recording.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "X25519", "-out", str(priv)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    blob = sealed.seal(sealed.load_public(pub.read_bytes()), b"x\n", AD,
                       ephemeral=X25519PrivateKey.generate(), nonce=os.urandom(12))
    assert sealed.open_sealed(sealed.load_private(priv.read_bytes()), blob, AD) == b"x\n"
