"""A rogue enrolled agent against a real server, after the holes a review found in the
first round (issue 13, break 2):

- H1: consent receipts. A receipt signed with the agent's own key for a case that is not
  the agent's (another customer's) is refused for good and audited (``receipt.refused``,
  once per interval); new receipts per agent and minute are held to a quota
  (``agent_receipts_per_minute``), refused with the limit and when to retry, audited once
  (``quota.refused``); a resend of a stored receipt is still acknowledged.
- H2: ``call`` sessions. Concurrent calls per agent are capped (``max_calls_per_agent``):
  the extra one is closed with a reason saying what happened and what to do; an idle call
  is closed after ``call_idle_timeout_s``; a new ``run`` session replaces the previous one
  (the old is closed with 4009), so an agent holds one at most; ``hw-agent help`` and
  ``hw-agent visit show`` (the legitimate calls) still work.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.receipt import sign_receipt
from tests.e2e.test_rogue_agent import RawAgent, audit, db_rows
from tests.harness import Harness

pytestmark = pytest.mark.e2e

#: how long a test waits for the server to close a connection before failing (a bound
#: for a hang, not a timing assertion)
HANG_S = 30.0


def consent(agent: RawAgent, case: str, receipt_id: str) -> m.ConsentUpdate:
    """A consent update signed with the agent's own (valid, enrolled) key."""
    now = datetime.now(UTC)
    grant = m.ConsentGrant(receipt_id=receipt_id, agent_id=agent.agent_id, case=case,
                           tech="alice", scopes=[m.Scope.DIAGNOSTICS, m.Scope.SHELL],
                           granted_at=now, expires_at=now + timedelta(hours=1), via="control")
    return m.ConsentUpdate(id=receipt_id, receipt=sign_receipt(grant, agent.key))


def receipts_of(h: Harness, case: str) -> list[str]:
    return [r[0] for r in db_rows(h, "SELECT receipt_id FROM consent_receipts WHERE "
                                     "case_number = ? ORDER BY receipt_id", case)]


async def closed(agent: RawAgent) -> ConnectionClosed:
    """Wait for the server to close ``agent``'s connection; fail if it never does."""
    try:
        async with asyncio.timeout(HANG_S):
            while True:
                await agent.recv()
    except ConnectionClosed as exc:
        return exc
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {HANG_S:g} s")


# ----------------------------------------------------------------------- H1: receipts


async def test_a_receipt_for_another_customers_case_is_refused_and_audited(
        harness: Harness) -> None:
    h = harness
    h.init_server(agent_open_cases=100, agent_cases_per_minute=100)
    h.start_server()
    victim_case = h.help(h.enroll("VICTIM", customer="Li Wei"))
    rogue_home = h.enroll("ROGUE", customer="Mallory")
    own_case = h.help(rogue_home)
    rogue = await RawAgent(h, rogue_home).connect()
    try:
        reply = await rogue.ask(consent(rogue, victim_case, "cg-forged"))
        assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
        assert reply.re == "cg-forged"
        assert f"case {victim_case} is not this computer's" in reply.message
        assert "not stored" in reply.message
        for i in range(5):  # a flood: refused one by one, audited once
            again = await rogue.ask(consent(rogue, victim_case, f"cg-forged-{i}"))
            assert isinstance(again, m.Error) and again.code is m.ErrorCode.REFUSED
        # A receipt for its own case is still stored (and a resend acknowledged).
        assert await rogue.ask(consent(rogue, own_case, "cg-own")) == m.Ack(re="cg-own")
        assert await rogue.ask(consent(rogue, own_case, "cg-own")) == m.Ack(re="cg-own")
    finally:
        await rogue.close()
    assert receipts_of(h, victim_case) == []
    assert receipts_of(h, own_case) == ["cg-own"]
    assert [s for _a, s, _d in audit(h, "consent.granted")] == [own_case]
    refused = audit(h, "receipt.refused")
    assert len(refused) == 1
    actor, subject, what = refused[0]
    assert (actor, subject) == (f"agent:{rogue.agent_id}", victim_case)
    assert what["reason"] == "not_own_case" and what["receipt"] == "cg-forged"
    assert what["refusals"] == 1


async def test_a_result_cannot_carry_a_receipt_for_another_case(harness: Harness) -> None:
    """The receipt a result carries is held to the same check as a consent update."""
    h = harness
    h.init_server()
    h.start_server()
    victim_case = h.help(h.enroll("VICTIM", customer="Li Wei"))
    home = h.enroll("ROGUE", customer="Mallory")
    case = h.help(home)
    tech = h.add_tech("alice")
    agent = await RawAgent(h, home).connect()
    diag = h.spawn("diag", "hw-tech", "--home", str(tech), "diag", case, "--timeout", "20")
    try:
        request = await agent.recv()
        assert isinstance(request, m.Request)
        forged = consent(agent, victim_case, "cg-in-result").receipt
        await agent.send(m.Result(id="rs-1", re=request.id, case=case, action=request.action,
                                  ok=True, receipt=forged))
        async with asyncio.timeout(HANG_S):  # before the fix: an Ack only, then silence
            replies = [await agent.recv(), await agent.recv()]
    finally:
        await agent.close()
        diag.stop()
    assert m.Ack(re="rs-1") in replies  # the result itself answers a real request
    refusal = next(r for r in replies if isinstance(r, m.Error))
    assert f"case {victim_case} is not this computer's" in refusal.message
    assert receipts_of(h, victim_case) == []
    assert [d["reason"] for _a, _s, d in audit(h, "receipt.refused")] == ["not_own_case"]


async def test_receipt_rate_quota_refuses_with_the_limit_and_audits_once(
        harness: Harness) -> None:
    h = harness
    h.init_server(agent_receipts_per_minute=3)
    h.start_server()
    home = h.enroll("Q", customer="Mallory")
    case = h.help(home)
    rogue = await RawAgent(h, home).connect(m.Mode.CALL)
    try:
        for i in range(3):
            assert await rogue.ask(consent(rogue, case, f"cg-{i}")) == m.Ack(re=f"cg-{i}")
        for i in range(3, 12):
            reply = await rogue.ask(consent(rogue, case, f"cg-{i}"))
            assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
            assert "sent 3 new consent receipts in the last minute (the limit is 3 per " \
                   "minute); it was not stored; retry in " in reply.message
    finally:
        await rogue.close()
    assert receipts_of(h, case) == ["cg-0", "cg-1", "cg-2"]
    assert len(audit(h, "consent.granted")) == 3
    refused = audit(h, "quota.refused")
    assert len(refused) == 1
    assert refused[0][0] == f"agent:{rogue.agent_id}"
    assert refused[0][2]["limit"] == "receipts_per_minute"
    assert refused[0][2]["allowed"] == 3


# ----------------------------------------------------------------------- H2: sessions


async def test_call_sessions_are_capped_per_agent_and_the_legit_call_still_works(
        harness: Harness) -> None:
    h = harness
    h.init_server(max_calls_per_agent=2)
    h.start_server()
    home = h.enroll("C", customer="Mallory")
    held = [await RawAgent(h, home).connect(m.Mode.CALL) for _ in range(2)]
    extra = await RawAgent(h, home).connect(m.Mode.CALL)
    try:
        gone = await closed(extra)
        assert gone.rcvd is not None and gone.rcvd.code == 1013
        assert "2 calls of this agent are open" in gone.rcvd.reason
        assert "finish one and retry" in gone.rcvd.reason
        # The held ones still work.
        opened = await held[0].ask(m.OpenCase(id="oc-1", description="x"))
        assert isinstance(opened, m.CaseOpened)
        out = h.run("hw-agent", "--home", str(home), "help", "while two are held",
                    check=False)
        assert out.returncode != 0 and "finish one and retry" in out.stderr
    finally:
        for agent in held:
            await agent.close()
    # Once they are closed, the legitimate calls go through again.
    assert h.help(home).startswith("HW-")
    h.run("hw-agent", "--home", str(home), "visit", "show")


async def test_an_idle_call_is_closed_and_the_next_call_works(harness: Harness) -> None:
    h = harness
    h.init_server(call_idle_timeout_s=1.0)
    h.start_server()
    home = h.enroll("I", customer="Mallory")
    idle = await RawAgent(h, home).connect(m.Mode.CALL)
    gone = await closed(idle)
    assert gone.rcvd is not None and gone.rcvd.code == 1000
    assert "idle" in gone.rcvd.reason and "open a new call" in gone.rcvd.reason
    assert h.help(home).startswith("HW-")


async def test_an_agent_holds_one_run_session_at_most(harness: Harness) -> None:
    h = harness
    h.init_server(max_calls_per_agent=1)
    h.start_server()
    home = h.enroll("R", customer="Mallory")
    first = await RawAgent(h, home).connect()
    second = await RawAgent(h, home).connect()
    try:
        gone = await closed(first)
        assert gone.rcvd is not None and gone.rcvd.code == 4009
        # Run sessions do not count as calls: one call still goes through.
        assert h.help(home).startswith("HW-")
        opened = await second.ask(m.OpenCase(id="oc-2", description="y"))
        assert isinstance(opened, m.CaseOpened)
    finally:
        await first.close()
        await second.close()
