"""Case states (server/cases.py): the table of moves, what a result leads to, and the rule
that a case is resolved only when no finding above info and no on-site ticket is left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from proto import messages as m
from server.cases import (
    GUARDED,
    MOVES,
    CaseState,
    Decision,
    Event,
    case_state_after,
    decide,
    event_of,
    parse_state,
    unresolved_findings,
)
from server.store import Store

CASE = "HW-20261126-0001"
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
S = CaseState


def finding(category: m.Category = m.Category.SOFTWARE, *, code: str = "x.y",
            fixable: bool = False, severity: m.Severity = m.Severity.WARNING,
            fixers: tuple[str, ...] = ()) -> m.Finding:
    return m.Finding(code=code, severity=severity, category=category, summary="s",
                     remote_fixable=fixable, fixers=list(fixers))


FAN = finding(m.Category.HARDWARE, code="thermal.fan_stalled", severity=m.Severity.CRITICAL)
RUNAWAY = finding(code="processes.runaway", fixable=True, fixers=("process.terminate",))
FULL = finding(code="disk.almost_full", fixable=True, fixers=("disk.cleanup",))
NOTE = finding(code="system.uptime_long", severity=m.Severity.INFO)


def diag(*findings: m.Finding, ok: bool = True, probe: str = "p",
         status: m.ProbeStatus = m.ProbeStatus.OK) -> m.Result:
    report = m.ProbeReport(probe=probe, version="1", status=status, findings=list(findings))
    return m.Result(id="r", re="q", case=CASE, action=m.Action.DIAG, ok=ok, reports=[report])


def fix(*, applied: bool = True, verified: bool = True, fixer: str = "process.terminate",
        decision: m.FixDecision = m.FixDecision.APPROVED) -> m.Result:
    plan = m.FixPlanInfo(fixer=fixer, summary="s", reversible=False)
    report = m.FixReport(decision=decision, plan=plan, applied=applied, ok=applied,
                         verified=verified)
    return m.Result(id="r", re="q", case=CASE, action=m.Action.FIX, ok=applied, fix=report)


def stored(*results: m.Result) -> list[m.StoredResult]:
    """Results as the store gives them back, oldest first."""
    return [m.StoredResult(msg_id=f"r{i}", request_id=f"q{i}", action=r.action, ok=r.ok,
                           received_at=T0 + timedelta(minutes=i), reports=r.reports,
                           error=r.error, fix=r.fix)
            for i, r in enumerate(results)]


# -- the table ----------------------------------------------------------------------------


def test_every_event_has_exactly_one_target_and_every_state_is_reachable_or_initial() -> None:
    assert set(MOVES) == set(Event)
    assert set(MOVES.values()) | {S.OPEN} == set(S)
    assert GUARDED == {S.RESOLVED}


def test_states_keep_the_strings_stored_and_sent() -> None:
    assert [s.value for s in S] == ["open", "diagnosed", "diagnosis-failed", "needs-onsite",
                                    "resolved", "closed", "reopened"]
    for state in S:  # a CaseInfo carries it as a Name
        info = m.CaseInfo(number=CASE, agent_id="ag-1", customer="c", description="",
                          state=state, opened_at=T0, updated_at=T0)
        back = msgspec.json.decode(msgspec.json.encode(info), type=m.CaseInfo)
        assert back.state == state.value and parse_state(back.state) is state
    assert parse_state("on-hold") is None


async def test_a_new_case_is_open_in_the_store(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    try:
        secret_hash = b"h" * 32
        await store.add_enroll_token(secret_hash=secret_hash, customer="acme",
                                     kind="individual", city="Chengdu",
                                     expires_at=T0 + timedelta(hours=1), now=T0)
        agent = await store.redeem_enroll_token(
            secret_hash=secret_hash, now=T0, agent_id="ag-" + "0" * 20, public_key=b"k" * 32,
            hostname="h", os="linux", software="t")
        case, _new = await store.open_case(agent_id=agent.agent_id, description="d",
                                           request_id="o1", now=T0)
        assert parse_state(case.state) is S.OPEN
    finally:
        await store.close()


# -- what a result leads to by the table alone ------------------------------------------


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
    (fix(applied=False, verified=False, decision=m.FixDecision.DRY_RUN), None),
    (m.Result(id="r", re="q", case=CASE, action=m.Action.DIAG, ok=False,
              error_code=m.ErrorCode.REFUSED, error="no_consent: x"), None),
    (m.Result(id="r", re="q", case=CASE, action=m.Action.PLUGINS, ok=True), None),
    (m.Result(id="r", re="q", case=CASE, action=m.Action.CONSENT, ok=True), None),
])
def test_case_state_after(result: m.Result, state: str | None) -> None:
    after = case_state_after(result)
    assert after == state
    assert after is None or isinstance(after, CaseState)
    event = event_of(result)
    assert (event is None) is (state is None)
    assert event is None or MOVES[event] == state


# -- which findings are left --------------------------------------------------------------


def test_the_newest_ok_report_of_each_probe_counts_and_info_is_left_out() -> None:
    history = stored(diag(FAN, probe="thermal"), diag(RUNAWAY, NOTE, probe="processes"),
                     diag(probe="thermal"))  # the fan reads fine again
    assert [f.code for f in unresolved_findings(history)] == ["processes.runaway"]


def test_a_probe_that_failed_or_a_failed_diagnosis_leaves_earlier_findings_standing() -> None:
    history = stored(diag(FAN, probe="thermal"),
                     diag(probe="thermal", status=m.ProbeStatus.TIMEOUT),
                     diag(ok=False, probe="thermal"))
    assert [f.code for f in unresolved_findings(history)] == ["thermal.fan_stalled"]


def test_a_verified_fix_resolves_the_findings_that_name_its_fixer_until_seen_again() -> None:
    history = stored(diag(FAN, RUNAWAY, FULL), fix(fixer="process.terminate"))
    assert [f.code for f in unresolved_findings(history)] == ["disk.almost_full",
                                                              "thermal.fan_stalled"]
    history = stored(diag(RUNAWAY), fix(), diag(RUNAWAY))
    assert [f.code for f in unresolved_findings(history)] == ["processes.runaway"]


def test_a_fix_that_did_not_verify_resolves_nothing() -> None:
    history = stored(diag(RUNAWAY), fix(verified=False), fix(applied=False, verified=False))
    assert [f.code for f in unresolved_findings(history)] == ["processes.runaway"]


# -- bug 3: resolved only when nothing is left --------------------------------------------


def test_bug3_an_unrelated_verified_fix_leaves_the_fan_and_its_ticket_open() -> None:
    """The bug: process.terminate, verified, moved a needs-onsite case with a critical
    stalled fan and an open on-site ticket to resolved."""
    left = unresolved_findings(stored(diag(FAN, RUNAWAY)))
    assert decide(S.NEEDS_ONSITE, fix(), left, ticket_open=True) == Decision(
        None, ("thermal.fan_stalled", "ticket open"))


@pytest.mark.parametrize(("left", "ticket_open", "held_by"), [
    ([FAN], False, ("thermal.fan_stalled",)),
    ([RUNAWAY], True, ("ticket open",)),  # the fix addresses the finding; the ticket holds
    ([RUNAWAY, FULL], False, ("disk.almost_full",)),
])
def test_anything_left_holds_the_case_where_it_is(left: list[m.Finding], ticket_open: bool,
                                                  held_by: tuple[str, ...]) -> None:
    assert decide(S.DIAGNOSED, fix(), left, ticket_open) == Decision(None, held_by)


@pytest.mark.parametrize("left", [[], [RUNAWAY], [NOTE], [RUNAWAY, NOTE]])
def test_nothing_left_resolves(left: list[m.Finding]) -> None:
    for current in (S.DIAGNOSED, S.NEEDS_ONSITE, S.OPEN, None):
        assert decide(current, fix(), left, ticket_open=False) == Decision(S.RESOLVED)


def test_only_resolving_is_held_other_moves_follow_the_table() -> None:
    left, ticket_open = [FAN], True
    assert decide(S.NEEDS_ONSITE, diag(), left, ticket_open) == Decision(S.DIAGNOSED)
    assert decide(S.DIAGNOSED, fix(verified=False), left, ticket_open) == Decision(
        S.NEEDS_ONSITE)
    assert decide(S.DIAGNOSED, diag(ok=False), left, ticket_open) == Decision(
        S.DIAGNOSIS_FAILED)
    assert decide(S.DIAGNOSED, fix(applied=False), left, ticket_open) == Decision(None)


def test_a_move_to_the_current_state_is_no_move() -> None:
    assert decide(S.DIAGNOSED, diag(), [], ticket_open=False) == Decision(None)
    assert decide(S.RESOLVED, fix(), [], ticket_open=False) == Decision(None)
