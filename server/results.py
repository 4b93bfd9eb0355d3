"""A result as stored and as shown again: the payload kept of a ``Result`` and the
``StoredResult`` a technician reads back (both gateways use them)."""

from __future__ import annotations

import msgspec

from proto import messages as m

from .store import ResultRecord

_reports = msgspec.json.Decoder(list[m.ProbeReport])
_fix_report = msgspec.json.Decoder(m.FixReport)
_encoder = msgspec.json.Encoder()


def result_payload(msg: m.Result) -> bytes:
    """What is stored of a result: the fix report for fixes, the probe reports otherwise."""
    if msg.action is m.Action.FIX:
        return _encoder.encode(msg.fix) if msg.fix is not None else b""
    return _encoder.encode(msg.reports)


def stored_result(rec: ResultRecord) -> m.StoredResult:
    """A stored row back as the wire struct (fix results keep their report as payload)."""
    action = m.Action(rec.action)
    fix = _fix_report.decode(rec.payload) if action is m.Action.FIX and rec.payload else None
    reports = _reports.decode(rec.payload) if action is not m.Action.FIX and rec.payload else []
    return m.StoredResult(msg_id=rec.msg_id, request_id=rec.request_id, action=action,
                          ok=rec.ok, received_at=rec.received_at, reports=reports,
                          error=rec.error, fix=fix)
