"""What the store returns: frozen records, every datetime timezone-aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .. import audit as _audit

__all__ = [
    "AgentRecord",
    "AuditCheck",
    "AuditEntry",
    "CaseEventRecord",
    "CaseRecord",
    "ConsentReceiptRecord",
    "ContractRecord",
    "RecordingRecord",
    "ResultRecord",
    "TechnicianRecord",
    "TunnelRecord",
]

@dataclass(frozen=True)
class AgentRecord:
    """An enrolled agent and the customer it belongs to."""

    agent_id: str
    customer: str
    kind: str
    city: str
    public_key: bytes
    hostname: str
    os: str
    software: str
    enrolled_at: datetime
    last_seen: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class CaseRecord:
    """A support case; ``number`` looks like ``HW-20261126-0001``."""

    number: str
    agent_id: str
    customer: str
    description: str
    state: str
    opened_at: datetime
    updated_at: datetime
    owner: str | None = None
    """The technician who owns the case; ``None``: unassigned (``docs/security.md``)."""


@dataclass(frozen=True)
class CaseEventRecord:
    """One entry of a case's state history."""

    state: str
    at: datetime
    actor: str
    note: str


@dataclass(frozen=True)
class ResultRecord:
    """A result an agent sent for a request in one of its cases; ``payload`` is JSON bytes."""

    msg_id: str
    request_id: str
    case: str
    agent_id: str
    action: str
    ok: bool
    payload: bytes
    error: str
    received_at: datetime


@dataclass(frozen=True)
class ContractRecord:
    """An enterprise service contract: free on-site visits per period, then ``rate``."""

    contract_id: str
    customer: str
    free_visits: int
    valid_from: date
    valid_to: date
    rate: int | None
    created_at: datetime
    visits_used: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.free_visits - self.visits_used)


@dataclass(frozen=True)
class TechnicianRecord:
    """A technician allowed to sign requests with the key of ``key_fingerprint``."""

    name: str
    key_fingerprint: str
    valid_before: datetime
    added_at: datetime
    revoked_at: datetime | None
    roles: str | None = None
    """The roles issued with the certificate (``remote,desk``; ``None``: before roles). The
    certificate is the authority; this is for listing."""


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the hash-chained audit log (see :meth:`Store.append_audit`)."""

    id: int
    at: datetime
    actor: str
    event: str
    subject: str
    detail: dict[str, Any]
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class AuditCheck:
    """The outcome of :meth:`Store.verify_audit`.

    ``entries`` counts every entry examined; ``first_bad_id`` and ``reason`` name the first
    broken link (``reason`` is ``""`` when ``ok``), e.g. "entry 17: its hash does not match
    its contents (edited?)". ``head`` is the hash of the newest intact entry (32 zero bytes
    for an empty log): record it elsewhere to detect a truncated tail later.
    """

    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str
    head: bytes = _audit.GENESIS


@dataclass(frozen=True)
class ConsentReceiptRecord:
    """A consent receipt an agent signed: ``payload`` is the exact bytes ``signature`` covers."""

    receipt_id: str
    agent_id: str
    case: str
    tech: str
    scopes: str
    payload: bytes
    signature: bytes
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    received_at: datetime


@dataclass(frozen=True)
class RecordingRecord:
    """A tunnel-session recording; ``data`` is ``b""`` when listed (:meth:`list_recordings`)."""

    recording_id: str
    agent_id: str
    case: str
    tech: str
    kind: str
    started_at: datetime
    ended_at: datetime | None
    size: int
    sha256: bytes
    data: bytes
    received_at: datetime
    #: the brokered tunnel (None: stored before tunnels were recorded), its key, and
    #: whether ``data`` is sealed to the recording key (``size``/``sha256``: plaintext)
    tunnel_id: str | None = None
    key_fingerprint: str | None = None
    sealed: bool = False


@dataclass(frozen=True)
class TunnelRecord:
    """An SSH tunnel the server brokered (table ``tunnels``)."""

    tunnel_id: str
    agent_id: str
    case: str
    tech: str
    key_fingerprint: str
    opened_at: datetime
    closed_at: datetime | None
