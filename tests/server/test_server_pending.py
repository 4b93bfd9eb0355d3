"""The requests waiting for an agent's result (server/pending.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from proto import messages as m
from server.errors import AgentGone, BusError, RelayError, ServerError
from server.pending import Answer, PendingRequests

CASE = "HW-20261126-0001"
AT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


class Link:
    """Stands for an agent link: compared by identity only."""


def result(re: str = "rq-1", case: str = CASE) -> m.Result:
    return m.Result(id="r-1", re=re, case=case, action=m.Action.DIAG, ok=True)


async def test_the_answer_from_the_link_it_went_to_for_its_case_settles_it_once() -> None:
    pending: PendingRequests[Link] = PendingRequests()
    link = Link()
    future = pending.expect("rq-1", link, CASE)
    assert "rq-1" in pending and len(pending) == 1 and pending.owner("rq-1") is link
    assert not pending.answer("rq-1", Link(), CASE, result(), AT), "another link"
    assert not pending.answer("rq-1", link, "HW-20261126-0002", result(), AT), "another case"
    assert not pending.answer("rq-2", link, CASE, result("rq-2"), AT), "nobody waits"
    assert not future.done()
    assert pending.answer("rq-1", link, CASE, result(), AT)
    assert not pending.answer("rq-1", link, CASE, result(), AT), "answered already"
    assert await future == (result(), AT)
    pending.drop("rq-1")
    assert "rq-1" not in pending and len(pending) == 0
    pending.drop("rq-1")  # twice is fine


async def test_a_link_that_ends_fails_its_requests_only() -> None:
    pending: PendingRequests[Link] = PendingRequests()
    gone, other = Link(), Link()
    a = pending.expect("rq-a", gone, CASE)
    b = pending.expect("rq-b", gone, CASE)
    c = pending.expect("rq-c", other, CASE)
    pending.gone(gone)
    for future in (a, b):
        with pytest.raises(AgentGone):
            await future
    assert not c.done()
    pending.drop("rq-c")
    assert c.cancelled()


async def test_a_remote_request_is_settled_by_its_asking_and_dropping_cancels_it() -> None:
    pending: PendingRequests[Link] = PendingRequests()
    future = pending.expect_remote("rq-1", CASE)
    assert pending.owner("rq-1") is None

    async def asked() -> Answer:
        return result(), AT

    pending.ask_remote("rq-1", asked())
    assert await future == (result(), AT)

    stuck = asyncio.Event()
    future = pending.expect_remote("rq-2", CASE)

    async def forever() -> Answer:
        await stuck.wait()
        raise AssertionError("never")

    pending.ask_remote("rq-2", forever())
    await asyncio.sleep(0)
    pending.drop("rq-2")
    assert future.cancelled()


@pytest.mark.parametrize("error", [TimeoutError(), BusError("no node"), AgentGone("gone")])
async def test_a_remote_request_that_cannot_be_relayed_fails_as_agent_gone(
        error: Exception) -> None:
    pending: PendingRequests[Link] = PendingRequests()
    future = pending.expect_remote("rq-1", CASE)

    async def failing() -> Answer:
        raise error

    pending.ask_remote("rq-1", failing())
    with pytest.raises(AgentGone):
        await future


async def test_fail_and_asking_for_a_forgotten_request() -> None:
    pending: PendingRequests[Link] = PendingRequests()
    future = pending.expect_remote("rq-1", CASE)
    pending.fail("rq-1", AgentGone("offline"))
    with pytest.raises(AgentGone, match="offline"):
        await future
    pending.fail("rq-1", AgentGone("again"))  # settled already: nothing happens
    pending.drop("rq-1")

    async def asked() -> Answer:
        raise AssertionError("not run for a request nobody waits for")

    pending.ask_remote("rq-1", asked())  # closed, not run, no "never awaited" warning


def test_relay_errors_join_the_server_tree() -> None:
    assert issubclass(AgentGone, RelayError) and issubclass(BusError, RelayError)
    assert issubclass(RelayError, ServerError)
