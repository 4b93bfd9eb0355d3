"""Consent receipts: what the customer allowed, signed by the agent's key.

The server stores them so the support side can prove what was allowed; it cannot forge
one, because it never holds the agent's private key (``docs/security.md#consent``).
"""

from __future__ import annotations

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import DecodeError
from .messages import ConsentGrant, SignedReceipt, SignedVisit, VisitDecision

RECEIPT_CONTEXT = b"helloword-receipt-v1"
VISIT_CONTEXT = b"helloword-visit-v1"
_decoder = msgspec.json.Decoder(ConsentGrant)
_visit_decoder = msgspec.json.Decoder(VisitDecision)


def sign_receipt(grant: ConsentGrant, key: Ed25519PrivateKey) -> SignedReceipt:
    payload = msgspec.json.encode(grant)
    return SignedReceipt(payload=payload, signature=key.sign(RECEIPT_CONTEXT + b"\0" + payload))


def verify_receipt(receipt: SignedReceipt, public_key: Ed25519PublicKey) -> ConsentGrant:
    """Check the agent's signature and decode the grant.

    Raises:
        DecodeError: a bad signature or a payload that is not a grant.
    """
    try:
        public_key.verify(receipt.signature, RECEIPT_CONTEXT + b"\0" + receipt.payload)
    except InvalidSignature:
        raise DecodeError("consent receipt signature does not verify") from None
    try:
        return _decoder.decode(receipt.payload)
    except msgspec.DecodeError:
        raise DecodeError("consent receipt payload is not a valid grant") from None


def sign_visit(decision: VisitDecision, key: Ed25519PrivateKey) -> SignedVisit:
    """The customer's decision on an on-site ticket, signed with the agent's key."""
    payload = msgspec.json.encode(decision)
    return SignedVisit(payload=payload, signature=key.sign(VISIT_CONTEXT + b"\0" + payload))


def verify_visit(signed: SignedVisit, public_key: Ed25519PublicKey) -> VisitDecision:
    """Check the agent's signature on a visit decision and decode it.

    Raises:
        DecodeError: a bad signature or a payload that is not a visit decision.
    """
    try:
        public_key.verify(signed.signature, VISIT_CONTEXT + b"\0" + signed.payload)
    except InvalidSignature:
        raise DecodeError("visit decision signature does not verify") from None
    try:
        return _visit_decoder.decode(signed.payload)
    except msgspec.DecodeError:
        raise DecodeError("visit decision payload is not a valid decision") from None
