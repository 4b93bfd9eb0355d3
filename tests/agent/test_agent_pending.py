"""The pending-ask registry: one answer per ask, from whichever channel is first."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.consent import ConsentStore, Policy
from agent.pending import Ask, Kind, Pending
from proto import messages as m

CASE = "HW-20261206-0001"
PLAN = m.FixPlanInfo(fixer="disk.cleanup", summary="move 3 files", reversible=True,
                     changes=["move a", "move b", "move c"])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConsentStore]:
    s = ConsentStore(tmp_path / "agent.db", agent_id="ag-test")
    yield s
    s.close()


def registry(store: ConsentStore, policy: Policy | None = None) -> Pending:
    return Pending(store, policy or Policy(), lambda: datetime.now(UTC))


def consent(p: Pending, *, tech: str = "alice", wait: float = 60.0,
            duration: timedelta = timedelta(minutes=20)) -> Ask:
    return p.ask_consent(case=CASE, tech=tech, fingerprint="SHA256:k", what="alice asks",
                         scopes=[m.Scope.DIAGNOSTICS, m.Scope.SHELL], duration=duration,
                         wait=wait)


async def test_the_first_answer_wins_and_makes_one_grant(store: ConsentStore) -> None:
    p = registry(store)
    ask = consent(p)
    assert p.open() == [ask] and p.get(ask.id) is ask and p.consent_for(CASE, "alice") is ask
    waiting = asyncio.ensure_future(p.wait(ask))
    grant = p.grant(ask, scopes=[m.Scope.DIAGNOSTICS], duration=timedelta(minutes=5),
                    via="control")
    assert grant is not None and grant.tech_fingerprint == "SHA256:k", "bound to the key"
    answer = await waiting
    assert (answer.yes, answer.via, answer.grant) == (True, "control", grant)
    # The other channels come too late: nothing more is recorded.
    assert p.grant(ask, scopes=[m.Scope.SHELL], duration=timedelta(minutes=5),
                   via="terminal") is None
    assert not p.decline(ask, via="terminal")
    assert [g.receipt_id for g in store.all()] == [grant.receipt_id]
    assert p.open() == [] and p.get(ask.id) is None and p.consent_for(CASE, "alice") is None


async def test_a_decline_first_means_no_grant_later(store: ConsentStore) -> None:
    p = registry(store)
    ask = consent(p)
    assert p.decline(ask, via="terminal")
    assert p.grant(ask, scopes=[m.Scope.DIAGNOSTICS], duration=timedelta(minutes=5),
                   via="control") is None
    answer = await p.wait(ask)
    assert (answer.yes, answer.grant, answer.describe()) == (
        False, None, "declined (answered in the terminal)")
    assert store.all() == []


async def test_no_answer_by_the_deadline_is_a_no(store: ConsentStore) -> None:
    p = registry(store)
    ask = consent(p, wait=0.0)
    answer = await p.wait(ask)
    assert (answer.yes, answer.via) == (False, "timeout")
    assert answer.describe() == "no answer in time: declined"
    assert p.grant(ask, scopes=[m.Scope.DIAGNOSTICS], duration=timedelta(minutes=5),
                   via="control") is None
    assert store.all() == [] and p.open() == []


async def test_a_cancelled_wait_withdraws_the_ask(store: ConsentStore) -> None:
    """The customer revoked consent or the agent stops: every channel stops asking."""
    p = registry(store)
    ask = consent(p)
    waiting = asyncio.ensure_future(p.wait(ask))
    elsewhere = asyncio.ensure_future(ask.answered())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    answer = await elsewhere
    assert (answer.yes, answer.via) == (False, "cancelled") and p.open() == []


async def test_the_policy_caps_the_asked_duration(store: ConsentStore) -> None:
    p = registry(store, Policy(max_minutes=10))
    ask = consent(p, duration=timedelta(hours=2))
    assert ask.duration == timedelta(minutes=10)


async def test_fix_plans_are_approved_or_declined_once(store: ConsentStore) -> None:
    p = registry(store)
    fix = p.ask_fix(case=CASE, tech="alice", plan=PLAN, what="alice proposes", wait=60)
    other = consent(p)
    assert p.fix_for(CASE) is fix and p.fix_for("HW-20261206-0002") is None
    assert [a.kind for a in p.open()] == [Kind.FIX, Kind.CONSENT]
    # A consent answer does not answer a fix, and the other way round.
    assert p.grant(fix, scopes=[m.Scope.FIX], duration=timedelta(1), via="control") is None
    assert not p.decline(fix, via="control") and not p.decide(other, approve=True, via="x")
    assert p.decide(fix, approve=True, via="control")
    assert not p.decide(fix, approve=False, via="terminal")
    answer = await p.wait(fix)
    assert (answer.yes, answer.describe()) == (True, "approved (answered with hw-agent "
                                                     "consent)")
    assert p.fix_for(CASE) is None and p.open() == [other]


async def test_each_ask_has_its_own_id_for_a_page(store: ConsentStore) -> None:
    p = registry(store)
    asks = [consent(p, tech=t) for t in ("alice", "bob", "carol")]
    assert len({a.id for a in asks}) == 3
    assert all(p.get(a.id) is a for a in asks)
    assert p.consent_for(CASE, "bob") is asks[1]
    grant = p.grant(asks[1], scopes=[m.Scope.SHELL], duration=timedelta(minutes=5),
                    via="page")
    assert grant is not None and grant.via == "page"
    assert (await asks[1].answered()).describe() == "granted shell (answered on the support page)"
