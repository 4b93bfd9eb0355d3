"""The store's record of requests sent to agents, results checked against it, the case
quotas read in the opening transaction and paged case listings, on SQLite (the batch fast
path and the SQLAlchemy path) and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.quota import QuotaExceeded, Quotas
from server.store import ResultRefused, Store, StoreError
from server.writer import Writer
from tests import postgres

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        try:
            yield s
        finally:
            await s.close()
        return
    reason = await postgres.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with postgres.scratch_database() as url:
        s = await Store.open(url)
        try:
            yield s
        finally:
            await s.close()


async def enroll(store: Store, agent_id: str, customer: str = "Li Wei") -> None:
    secret_hash = agent_id.encode().ljust(32, b"\0")
    await store.add_enroll_token(secret_hash=secret_hash, customer=customer, kind="individual",
                                 city="Chengdu", expires_at=T0 + timedelta(days=1), now=T0)
    await store.redeem_enroll_token(secret_hash=secret_hash, now=T0, agent_id=agent_id,
                                    public_key=agent_id.encode().ljust(32, b"k"),
                                    hostname="pc", os="Linux", software="hw-agent")


Store_ = Callable[..., Awaitable[bool]]


@pytest.fixture(params=["batch", "transaction"])
def store_result(request: pytest.FixtureRequest, store: Store) -> Store_:
    """Store a result the way the agent gateway does (a group-committed batch: the SQLite
    fast path there) or in a transaction of its own (SQLAlchemy on both backends)."""
    async def via_batch(**kw: Any) -> bool:
        writer = Writer(store)
        try:
            return bool(await writer.submit(lambda conn: store.store_result_in(conn, **kw)))
        finally:
            await writer.close()

    return via_batch if request.param == "batch" else store.store_result


async def two_cases(store: Store) -> tuple[str, str]:
    await enroll(store, "ag-a")
    await enroll(store, "ag-b", customer="Other")
    a, _ = await store.open_case(agent_id="ag-a", description="a", request_id="o1", now=T0)
    b, _ = await store.open_case(agent_id="ag-b", description="b", request_id="o1", now=T0)
    return a.number, b.number


def result(case: str, agent_id: str = "ag-a", *, msg_id: str = "rs-1", request_id: str = "rq-1",
           action: str = "diag") -> dict[str, Any]:
    return {"msg_id": msg_id, "request_id": request_id, "case": case, "agent_id": agent_id,
            "action": action, "ok": True, "payload": b"[]", "error": "", "now": T0,
            "case_state": "diagnosed", "audit_detail": {"result": msg_id},
            "answers_request": True}


async def state_of(store: Store, case: str) -> str:
    found = await store.get_case(case)
    assert found is not None
    return found.state


async def test_a_result_answering_a_recorded_request_is_stored_once(
        store: Store, store_result: Store_) -> None:
    a, _b = await two_cases(store)
    await store.record_request(request_id="rq-1", agent_id="ag-a", case=a, action="diag",
                               now=T0)
    assert await store_result(**result(a)) is True
    assert await store_result(**result(a)) is False  # the outbox's resend: a duplicate
    assert [r.msg_id for r in await store.list_results(a)] == ["rs-1"]
    assert await state_of(store, a) == "diagnosed"


@pytest.mark.parametrize(("change", "reason"), [
    ({"request_id": "rq-never-sent"}, "unrequested"),
    ({"agent_id": "ag-b", "case": "B"}, "unrequested"),  # another agent's request
    ({"case": "B"}, None),  # a case that is not the agent's: NotFound, as before
    ({"action": "fix"}, "wrong_action"),
    ({"msg_id": "rs-2"}, "answered"),  # a second result for an answered request
])
async def test_a_result_answering_no_request_of_its_agent_is_refused_and_changes_nothing(
        store: Store, store_result: Store_, change: dict[str, Any], reason: str | None) -> None:
    a, b = await two_cases(store)
    await store.record_request(request_id="rq-1", agent_id="ag-a", case=a, action="diag",
                               now=T0)
    if reason == "answered":
        assert await store_result(**result(a)) is True
    kw = result(a) | {k: (b if v == "B" else v) for k, v in change.items()}
    before = {c: (await state_of(store, c), len(await store.list_results(c))) for c in (a, b)}
    audit_before = len(await store.list_audit(limit=1000))
    with pytest.raises(StoreError) as info:
        await store_result(**kw)
    if reason is None:
        assert not isinstance(info.value, ResultRefused)
    else:
        assert isinstance(info.value, ResultRefused) and info.value.reason == reason
        assert "it was not stored" in str(info.value)
    assert {c: (await state_of(store, c), len(await store.list_results(c)))
            for c in (a, b)} == before
    assert len(await store.list_audit(limit=1000)) == audit_before


async def test_a_result_for_the_request_of_another_case_of_the_same_agent_is_refused(
        store: Store, store_result: Store_) -> None:
    a, _b = await two_cases(store)
    other, _ = await store.open_case(agent_id="ag-a", description="2", request_id="o2", now=T0)
    await store.record_request(request_id="rq-1", agent_id="ag-a", case=a, action="diag",
                               now=T0)
    with pytest.raises(ResultRefused) as info:
        await store_result(**result(other.number))
    assert info.value.reason == "wrong_case"
    assert await store.list_results(other.number) == []


async def test_the_request_and_audit_entry_of_one_relayed_command_share_a_batch(
        store: Store) -> None:
    """What the relay does: the command's audit entry and the request record in ONE job."""
    a, _b = await two_cases(store)
    writer = Writer(store)

    async def job(conn: Any) -> None:
        await store.append_audit_in(conn, event="command", actor="tech:alice", subject=a,
                                    detail={"request": "rq-1"}, now=T0)
        await store.record_request_in(conn, request_id="rq-1", agent_id="ag-a", case=a,
                                      action="diag", now=T0)
    try:
        await writer.submit(job)
    finally:
        await writer.close()
    assert writer.batches == 1
    assert await store.store_result(**result(a)) is True


# ----------------------------------------------------------------------- case quotas


async def test_open_cases_quota_counts_the_agents_waiting_cases(store: Store) -> None:
    await enroll(store, "ag-a")
    await enroll(store, "ag-b")
    quotas = Quotas(open_cases=2, cases_per_minute=100)
    for i in range(2):
        await store.open_case(agent_id="ag-a", description="x", request_id=f"o{i}",
                              now=T0 + timedelta(minutes=i), quotas=quotas)
    with pytest.raises(QuotaExceeded) as info:
        await store.open_case(agent_id="ag-a", description="x", request_id="o9",
                              now=T0 + timedelta(minutes=5), quotas=quotas)
    assert info.value.limit == "open_cases"
    assert "2 cases waiting" in str(info.value) and "limit is 2" in str(info.value)
    # a retry of a request that opened a case gets it, whatever the counts
    again, new = await store.open_case(agent_id="ag-a", description="x", request_id="o1",
                                       now=T0 + timedelta(minutes=6), quotas=quotas)
    assert not new
    # another agent has its own quota
    await store.open_case(agent_id="ag-b", description="x", request_id="o1", now=T0,
                          quotas=quotas)
    # a case a technician took up (diagnosed) no longer waits
    await store.set_case_state(again.number, "diagnosed", actor="server", now=T0)
    await store.open_case(agent_id="ag-a", description="x", request_id="o10",
                          now=T0 + timedelta(minutes=7), quotas=quotas)
    assert len(await store.list_cases(agent_id="ag-a")) == 3


async def test_case_rate_quota_says_when_to_retry(store: Store) -> None:
    await enroll(store, "ag-a")
    quotas = Quotas(open_cases=100, cases_per_minute=3)
    for i in range(3):
        await store.open_case(agent_id="ag-a", description="x", request_id=f"o{i}",
                              now=T0 + timedelta(seconds=10 * i), quotas=quotas)
    with pytest.raises(QuotaExceeded) as info:
        await store.open_case(agent_id="ag-a", description="x", request_id="o3",
                              now=T0 + timedelta(seconds=25), quotas=quotas)
    assert info.value.limit == "cases_per_minute"
    assert info.value.retry_after == 35.0  # the oldest of the minute leaves it at T0 + 60 s
    assert "retry in 35 s" in str(info.value)
    await store.open_case(agent_id="ag-a", description="x", request_id="o3",
                          now=T0 + timedelta(seconds=61), quotas=quotas)


# ----------------------------------------------------------------------- case pages


async def test_case_pages_cover_every_case_once_and_filter_by_customer(store: Store) -> None:
    await enroll(store, "ag-a", customer="Li Wei")
    await enroll(store, "ag-b", customer="Wang Fang")
    numbers = []
    for i in range(7):
        agent = "ag-a" if i % 3 else "ag-b"
        case, _ = await store.open_case(agent_id=agent, description=str(i),
                                        request_id=f"o{i}", now=T0 + timedelta(seconds=i))
        numbers.append(case.number)
    pages = [[c.number for c in await store.list_cases(offset=o, limit=3)] for o in (0, 3, 6)]
    assert pages == [numbers[::-1][0:3], numbers[::-1][3:6], numbers[::-1][6:]]
    wang = await store.list_cases(customer="Wang Fang", offset=1, limit=10)
    assert [c.number for c in wang] == [numbers[3], numbers[0]]
    assert await store.list_cases(customer="Nobody") == []
    for bad in ({"offset": -1}, {"limit": 0}):
        with pytest.raises(StoreError, match="a case page needs"):
            await store.list_cases(**bad)
