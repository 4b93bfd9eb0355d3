"""Case states and what moves a case between them: one table, pure decisions (no I/O).

A case is opened by the customer's agent and then moves on what its stored results say
(:data:`MOVES`, from any state)::

    open ──diagnosis──> diagnosed | diagnosis-failed | needs-onsite (a hardware fault)
      any ──fix applied, verified──> resolved        (only if nothing holds it: below)
      any ──fix applied, NOT verified──> needs-onsite
    needs-onsite ──on-site ticket followed up──> closed (resolved) | reopened (not resolved)

Refusals, declined fixes, dry runs and the other actions (plugins, consent, visits,
tunnels) change nothing. ``needs-onsite`` opens an on-site ticket at once
(:mod:`server.onsite.tickets`, whose follow-up call makes the last move).

**Resolved only when nothing is left** (:func:`decide`): a verified fix resolves the case
only when no finding above ``info`` remains unresolved and no on-site ticket of the case is
open; otherwise the case stays where it is. A finding is unresolved while the newest
successful report of its probe still shows it and no verified fix since then addresses
it (the finding names that fixer in ``fixers``); a later diagnosis decides again.

The values are the strings stored in the ``cases`` table and sent as
:attr:`proto.messages.CaseInfo.state` (``docs/protocol.md#case-states``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from proto import messages as m

__all__ = [
    "MOVES",
    "CaseState",
    "Decision",
    "Event",
    "case_state_after",
    "decide",
    "event_of",
    "parse_state",
    "unresolved_findings",
]


class CaseState(StrEnum):
    """Where a case stands (the stored and wire value is the string)."""

    OPEN = "open"                          # opened by the customer's agent
    DIAGNOSED = "diagnosed"                # a diagnosis ran; nothing needs a visit
    DIAGNOSIS_FAILED = "diagnosis-failed"  # the diagnosis itself failed
    NEEDS_ONSITE = "needs-onsite"          # a fault remote support cannot fix: a ticket
    RESOLVED = "resolved"                  # fixed remotely, nothing left open
    CLOSED = "closed"                      # the on-site follow-up confirmed it resolved
    REOPENED = "reopened"                  # the on-site follow-up found it was not


class Event(StrEnum):
    """What happened to a case, as far as its state is concerned."""

    DIAGNOSED = "diagnosis: no fault that needs a visit"
    HARDWARE_FAULT = "diagnosis: a hardware fault no fixer can address remotely"
    DIAGNOSIS_FAILED = "diagnosis failed"
    FIX_VERIFIED = "fix applied and verified"
    FIX_NOT_VERIFIED = "fix applied, not verified"
    FOLLOWUP_RESOLVED = "on-site follow-up: resolved"
    FOLLOWUP_NOT_RESOLVED = "on-site follow-up: not resolved"


S = CaseState
#: The state each event leads to, from whatever state the case is in.
MOVES: dict[Event, CaseState] = {
    Event.DIAGNOSED: S.DIAGNOSED,
    Event.HARDWARE_FAULT: S.NEEDS_ONSITE,
    Event.DIAGNOSIS_FAILED: S.DIAGNOSIS_FAILED,
    Event.FIX_VERIFIED: S.RESOLVED,
    Event.FIX_NOT_VERIFIED: S.NEEDS_ONSITE,
    Event.FOLLOWUP_RESOLVED: S.CLOSED,
    Event.FOLLOWUP_NOT_RESOLVED: S.REOPENED,
}
#: States a result moves a case to only when nothing holds it (:func:`decide`).
GUARDED = frozenset({S.RESOLVED})


def parse_state(value: str) -> CaseState | None:
    """The stored string as a :class:`CaseState` (``None``: not one of ours)."""
    try:
        return CaseState(value)
    except ValueError:
        return None


def _needs_visit(f: m.Finding) -> bool:
    return (f.category is m.Category.HARDWARE and not f.remote_fixable
            and f.severity is not m.Severity.INFO)


def event_of(msg: m.Result) -> Event | None:
    """What a newly stored result means for its case (``None``: nothing)."""
    if msg.error_code is m.ErrorCode.REFUSED:
        return None
    if msg.action is m.Action.DIAG:
        if not msg.ok:
            return Event.DIAGNOSIS_FAILED
        hardware = any(_needs_visit(f) for r in msg.reports for f in r.findings)
        return Event.HARDWARE_FAULT if hardware else Event.DIAGNOSED
    if msg.action is m.Action.FIX and msg.fix is not None and msg.fix.applied:
        return Event.FIX_VERIFIED if msg.fix.verified else Event.FIX_NOT_VERIFIED
    return None


def case_state_after(msg: m.Result) -> CaseState | None:
    """The state a newly stored result leads to by :data:`MOVES` alone (``None``:
    unchanged). A state in :data:`GUARDED` is only a candidate: :func:`decide` has the
    last word (the server asks it only then, so a diagnosis reads nothing more)."""
    event = event_of(msg)
    return None if event is None else MOVES[event]


def _addresses(fix: m.FixReport, finding: m.Finding) -> bool:
    """Whether a verified ``fix`` resolves ``finding`` (the finding names its fixer)."""
    return (fix.applied and fix.verified and fix.plan is not None
            and fix.plan.fixer in finding.fixers)


def unresolved_findings(history: Iterable[m.StoredResult]) -> list[m.Finding]:
    """The findings above ``info`` the case's stored results (oldest first) leave open.

    Per probe, the newest successful (``ok``) report counts: a finding it no longer shows
    is gone; a probe that failed or timed out leaves its earlier findings standing. A
    verified fix resolves the findings before it that name its fixer. Sorted by code.
    """
    by_probe: dict[str, list[m.Finding]] = {}
    for result in history:
        if not result.ok:
            continue
        if result.action is m.Action.DIAG:
            for report in result.reports:
                if report.status is m.ProbeStatus.OK:
                    by_probe[report.probe] = [f for f in report.findings
                                              if f.severity is not m.Severity.INFO]
        elif result.action is m.Action.FIX and result.fix is not None:
            fix = result.fix
            for probe, findings in by_probe.items():
                by_probe[probe] = [f for f in findings if not _addresses(fix, f)]
    return sorted((f for findings in by_probe.values() for f in findings),
                  key=lambda f: f.code)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a result moves a case: ``state`` (``None``: it stays), and when a move was
    held back, what held it (``held_by``: finding codes, ``"ticket open"``)."""

    state: CaseState | None
    held_by: tuple[str, ...] = ()


def decide(current: CaseState | None, msg: m.Result, unresolved: Sequence[m.Finding],
           ticket_open: bool) -> Decision:
    """Where the newly stored result ``msg`` moves a case now in ``current``.

    ``unresolved`` are the case's unresolved findings above ``info`` before ``msg``
    (:func:`unresolved_findings`), ``ticket_open`` whether an on-site ticket of the case
    is open (not closed, cancelled or not eligible). A case becomes ``resolved`` only when
    no finding stays unresolved after ``msg`` and no ticket is open; else it stays.
    """
    target = case_state_after(msg)
    if target is None or target == current:
        return Decision(None)
    if target in GUARDED:
        fix = msg.fix
        left = [f.code for f in unresolved
                if f.severity is not m.Severity.INFO
                and not (fix is not None and _addresses(fix, f))]
        held = tuple(dict.fromkeys(left)) + (("ticket open",) if ticket_open else ())
        if held:
            return Decision(None, held)
    return Decision(target)
