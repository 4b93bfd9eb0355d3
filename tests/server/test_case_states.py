"""Which case state a stored result leads to (server.app.case_state_after)."""

from __future__ import annotations

import pytest

from proto import messages as m
from server.app import case_state_after

CASE = "HW-20261126-0001"


def finding(category: m.Category, *, fixable: bool = False,
            severity: m.Severity = m.Severity.WARNING) -> m.Finding:
    return m.Finding(code="x.y", severity=severity, category=category, summary="s",
                     remote_fixable=fixable)


def diag(*findings: m.Finding, ok: bool = True) -> m.Result:
    report = m.ProbeReport(probe="p", version="1", status=m.ProbeStatus.OK,
                           findings=list(findings))
    return m.Result(id="r", re="q", case=CASE, action=m.Action.DIAG, ok=ok, reports=[report])


def fix(*, applied: bool, verified: bool) -> m.Result:
    report = m.FixReport(decision=m.FixDecision.APPROVED, applied=applied, ok=applied,
                         verified=verified)
    return m.Result(id="r", re="q", case=CASE, action=m.Action.FIX, ok=applied, fix=report)


@pytest.mark.parametrize(("result", "state"), [
    (diag(), "diagnosed"),
    (diag(finding(m.Category.SOFTWARE)), "diagnosed"),
    (diag(finding(m.Category.HARDWARE, fixable=True)), "diagnosed"),
    (diag(finding(m.Category.HARDWARE, severity=m.Severity.INFO)), "diagnosed"),
    (diag(finding(m.Category.HARDWARE)), "needs-onsite"),
    (diag(finding(m.Category.HARDWARE, severity=m.Severity.CRITICAL)), "needs-onsite"),
    (diag(ok=False), "diagnosis-failed"),
    (fix(applied=True, verified=True), "resolved"),
    (fix(applied=True, verified=False), "needs-onsite"),
    (fix(applied=False, verified=False), None),
    (m.Result(id="r", re="q", case=CASE, action=m.Action.DIAG, ok=False,
              error_code=m.ErrorCode.REFUSED, error="no_consent: x"), None),
])
def test_case_state_after(result: m.Result, state: str | None) -> None:
    assert case_state_after(result) == state
