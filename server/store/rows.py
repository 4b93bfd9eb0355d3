"""The store's common queries and the row -> record helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import sqlalchemy as sa

from .. import audit as _audit
from .records import (
    AgentRecord,
    AuditEntry,
    CaseRecord,
    ConsentReceiptRecord,
    ContractRecord,
    RecordingRecord,
    ResultRecord,
    TechnicianRecord,
    TunnelRecord,
)
from .schema import (
    agents,
    audit,
    cases,
    consent_receipts,
    contracts,
    customers,
    results,
    technicians,
)

#: Free visits consumed by bookings (the table is owned by server.onsite.tables).
_contract_visits = sa.table("contract_visits", sa.column("contract_id"))


def contract_select() -> sa.Select[Any]:
    used = (sa.select(sa.func.count()).select_from(_contract_visits)
            .where(_contract_visits.c.contract_id == contracts.c.contract_id)
            .scalar_subquery())
    return sa.select(contracts, used.label("visits_used"))


def to_contract(row: Any) -> ContractRecord:
    """Visits used are the free visits on-site bookings consumed (``contract_visits``)."""
    return ContractRecord(row.contract_id, row.customer, int(row.free_visits), row.valid_from,
                          row.valid_to, row.rate, row.created_at, int(row.visits_used))


Row: TypeAlias = sa.Row[*tuple[Any, ...]]

agent_columns: Final = (
    agents.c.agent_id,
    customers.c.name,
    customers.c.kind,
    customers.c.city,
    agents.c.public_key,
    agents.c.hostname,
    agents.c.os,
    agents.c.software,
    agents.c.enrolled_at,
    agents.c.last_seen,
    agents.c.revoked_at,
)
agent_select: Final = sa.select(*agent_columns).join_from(
    agents, customers, agents.c.customer_id == customers.c.id
)

case_select: Final = sa.select(
    cases.c.number,
    cases.c.agent_id,
    customers.c.name,
    cases.c.description,
    cases.c.state,
    cases.c.opened_at,
    cases.c.updated_at,
    cases.c.owner,
).join_from(cases, customers, cases.c.customer_id == customers.c.id)

result_select: Final = sa.select(
    results.c.msg_id,
    results.c.request_id,
    cases.c.number,
    results.c.agent_id,
    results.c.action,
    results.c.ok,
    results.c.payload,
    results.c.error,
    results.c.received_at,
).join_from(results, cases, results.c.case_id == cases.c.id)

technician_select: Final = sa.select(
    technicians.c.name,
    technicians.c.key_fingerprint,
    technicians.c.valid_before,
    technicians.c.added_at,
    technicians.c.revoked_at,
    technicians.c.roles,
)


audit_select: Final = sa.select(
    audit.c.id,
    audit.c.at,
    audit.c.actor,
    audit.c.event,
    audit.c.subject,
    audit.c.detail,
    audit.c.prev_hash,
    audit.c.hash,
)

# For verify_audit: every column as raw as the driver gives it, so that a value edited into
# something unparsable is reported as a broken entry instead of crashing the check.
audit_raw_select: Final = sa.select(
    audit.c.id,
    sa.type_coerce(audit.c.at, sa.String).label("at"),
    sa.type_coerce(audit.c.actor, sa.String).label("actor"),
    sa.type_coerce(audit.c.event, sa.String).label("event"),
    sa.type_coerce(audit.c.subject, sa.String).label("subject"),
    sa.type_coerce(audit.c.detail, sa.String).label("detail"),
    audit.c.prev_hash,
    audit.c.hash,
)

receipt_select: Final = sa.select(
    consent_receipts.c.receipt_id,
    consent_receipts.c.agent_id,
    consent_receipts.c.case_number,
    consent_receipts.c.tech,
    consent_receipts.c.scopes,
    consent_receipts.c.payload,
    consent_receipts.c.signature,
    consent_receipts.c.granted_at,
    consent_receipts.c.expires_at,
    consent_receipts.c.revoked_at,
    consent_receipts.c.received_at,
)


def to_agent(row: Row) -> AgentRecord:
    return AgentRecord(
        agent_id=row.agent_id,
        customer=row.name,
        kind=row.kind,
        city=row.city,
        public_key=bytes(row.public_key),
        hostname=row.hostname,
        os=row.os,
        software=row.software,
        enrolled_at=row.enrolled_at,
        last_seen=row.last_seen,
        revoked_at=row.revoked_at,
    )


def to_case(row: Row) -> CaseRecord:
    return CaseRecord(
        number=row.number,
        agent_id=row.agent_id,
        customer=row.name,
        description=row.description,
        state=row.state,
        opened_at=row.opened_at,
        updated_at=row.updated_at,
        owner=row.owner,
    )


def to_result(row: Row) -> ResultRecord:
    return ResultRecord(
        msg_id=row.msg_id,
        request_id=row.request_id,
        case=row.number,
        agent_id=row.agent_id,
        action=row.action,
        ok=bool(row.ok),
        payload=bytes(row.payload),
        error=row.error,
        received_at=row.received_at,
    )


def stored_detail(text: str) -> dict[str, Any]:
    """The stored detail as a dict; an unreadable one (tampering) is shown, not hidden."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"unreadable": text}


def to_audit_entry(row: Row) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        event=row.event,
        subject=row.subject,
        detail=stored_detail(row.detail),
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
    )


def raw_bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None


def raw_datetime(value: object) -> datetime | None:
    """A timestamp as the driver returned it (SQLite: text, PostgreSQL: datetime), or None."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def audit_computed_hash(row: Row) -> bytes | None:
    """Recompute a raw entry's hash from its contents (``None`` if they are unreadable)."""
    at = raw_datetime(row.at)
    prev_hash = raw_bytes(row.prev_hash)
    texts = (row.actor, row.event, row.subject, row.detail)
    if at is None or prev_hash is None or not all(isinstance(t, str) for t in texts):
        return None
    return _audit.entry_hash(
        prev_hash=prev_hash,
        id=row.id,
        at=at,
        actor=row.actor,
        event=row.event,
        subject=row.subject,
        detail_json=row.detail,
    )


def to_receipt(row: Row) -> ConsentReceiptRecord:
    return ConsentReceiptRecord(
        receipt_id=row.receipt_id,
        agent_id=row.agent_id,
        case=row.case_number,
        tech=row.tech,
        scopes=row.scopes,
        payload=bytes(row.payload),
        signature=bytes(row.signature),
        granted_at=row.granted_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        received_at=row.received_at,
    )


def to_technician(row: Row) -> TechnicianRecord:
    return TechnicianRecord(
        name=row.name,
        key_fingerprint=row.key_fingerprint,
        valid_before=row.valid_before,
        added_at=row.added_at,
        revoked_at=row.revoked_at,
        roles=row.roles,
    )



def to_recording(row: Any, data: bytes) -> RecordingRecord:
    return RecordingRecord(
        recording_id=row.recording_id, agent_id=row.agent_id, case=row.case_number,
        tech=row.tech, kind=row.kind, started_at=row.started_at, ended_at=row.ended_at,
        size=row.size, sha256=bytes(row.sha256), data=data, received_at=row.received_at,
        tunnel_id=row.tunnel_id, key_fingerprint=row.key_fingerprint, sealed=bool(row.sealed))


def to_tunnel(row: Any) -> TunnelRecord:
    return TunnelRecord(
        tunnel_id=row.tunnel_id, agent_id=row.agent_id, case=row.case_number, tech=row.tech,
        key_fingerprint=row.key_fingerprint, opened_at=row.opened_at, closed_at=row.closed_at)
