"""Signed revocation lists: signature, canonical form, highest sequence wins, freshness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from proto import codec
from proto import messages as m
from proto.revocation import (
    DEFAULT_GRACE,
    Offer,
    RevocationError,
    consider,
    freshness,
    make_list,
    payload_of,
    sign_list,
    verify_list,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FP_A = "SHA256:" + "A" * 43
FP_B = "SHA256:" + "b" * 43
ORG = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ORG_PUB = ORG.public_key().public_bytes_raw()


def _list(seq: int = 1, fps: tuple[str, ...] = (FP_B, FP_A, FP_B), *, issued: datetime = T0,
          days: float = 7):
    return make_list(sequence=seq, issued=issued, next_update=issued + timedelta(days=days),
                     fingerprints=set(fps))


def test_canonical_payload_is_sorted_and_whole_seconds() -> None:
    body = _list(issued=T0 + timedelta(microseconds=123))
    assert payload_of(body) == (
        b'{"fingerprints":["' + FP_A.encode() + b'","' + FP_B.encode() + b'"],'
        b'"issued":"2026-12-01T12:00:00Z","next_update":"2026-12-08T12:00:00Z",'
        b'"sequence":1}')


def test_sign_then_verify_round_trips_through_the_wire() -> None:
    body = _list(5)
    signed = sign_list(body, ORG)
    back = codec.decode(codec.encode(signed))
    assert isinstance(back, m.SignedRevocations)
    assert verify_list(back, org_pub=ORG_PUB) == body


def test_a_list_signed_by_another_key_is_refused() -> None:
    other = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    with pytest.raises(RevocationError, match="not signed by this organisation's key"):
        verify_list(sign_list(_list(), other), org_pub=ORG_PUB)


def test_an_altered_list_is_refused() -> None:
    signed = sign_list(_list(), ORG)
    emptied = signed.payload.replace(FP_A.encode(), FP_B.encode())
    with pytest.raises(RevocationError, match="altered"):
        verify_list(m.SignedRevocations(payload=emptied, signature=signed.signature),
                    org_pub=ORG_PUB)


def test_a_signature_of_another_context_is_refused() -> None:
    """The org key's signature over the bare payload (or for anything else) is no list."""
    payload = payload_of(_list())
    with pytest.raises(RevocationError):
        verify_list(m.SignedRevocations(payload=payload, signature=ORG.sign(payload)),
                    org_pub=ORG_PUB)


def test_signed_garbage_is_refused_with_a_clear_error() -> None:
    from proto.revocation import signed_bytes

    payload = b'{"sequence": 1}'
    with pytest.raises(RevocationError, match="not a valid list"):
        verify_list(m.SignedRevocations(payload=payload, signature=ORG.sign(
            signed_bytes(payload))), org_pub=ORG_PUB)


@pytest.mark.parametrize("days", [0, -1, 400])
def test_validity_out_of_range_is_refused(days: float) -> None:
    with pytest.raises(RevocationError):
        _list(days=days)


def test_malformed_fingerprint_is_refused() -> None:
    with pytest.raises(RevocationError):
        _list(fps=("SHA256:short",))


def test_highest_sequence_wins_and_never_goes_back() -> None:
    one, two = _list(1), _list(2, (FP_A,))
    assert consider(None, one) is Offer.NEWER
    assert consider(one, two) is Offer.NEWER
    assert consider(two, one) is Offer.OLDER
    assert consider(two, two) is Offer.SAME
    assert consider(two, _list(2, (FP_B,))) is Offer.CONFLICT


def test_fresh_until_next_update_plus_grace() -> None:
    body = _list(days=1)
    limit = T0 + timedelta(days=1) + DEFAULT_GRACE
    assert freshness(body, now=limit - timedelta(seconds=1), grace=DEFAULT_GRACE) is None
    stale = freshness(body, now=limit, grace=DEFAULT_GRACE)
    assert stale is not None
    assert "stale revocation list" in stale.message
    assert "hw-org revocations" in stale.message
    assert freshness(body, now=limit, grace=DEFAULT_GRACE + timedelta(hours=1)) is None


def test_no_list_is_not_fresh() -> None:
    stale = freshness(None, now=T0, grace=DEFAULT_GRACE)
    assert stale is not None and "no signed revocation list" in stale.message


def test_naive_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        freshness(_list(), now=datetime(2026, 1, 1), grace=DEFAULT_GRACE)


@given(st.binary(max_size=300), st.binary(min_size=64, max_size=64))
def test_random_payloads_never_raise_anything_else(payload: bytes, sig: bytes) -> None:
    try:
        verify_list(m.SignedRevocations(payload=payload, signature=sig), org_pub=ORG_PUB)
    except RevocationError:
        pass


@given(st.binary(max_size=300))
def test_random_payloads_signed_by_the_org_never_raise_anything_else(payload: bytes) -> None:
    from proto.revocation import signed_bytes

    try:
        verify_list(m.SignedRevocations(payload=payload, signature=ORG.sign(
            signed_bytes(payload))), org_pub=ORG_PUB)
    except RevocationError:
        pass


def test_error_texts_hold_no_payload() -> None:
    signed = sign_list(_list(), ORG)
    other = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key().public_bytes_raw()
    with pytest.raises(RevocationError) as info:
        verify_list(signed, org_pub=other)
    assert FP_A not in str(info.value)
    assert msgspec.json.encode(signed).decode() not in str(info.value)
