"""Requests relayed to agents that wait for their result: one entry per request id.

A request goes to an agent either on a link of this node (the answer arrives as the agent's
:class:`~proto.messages.Result`, see :meth:`PendingRequests.answer`) or through the bus to
the node holding the agent (the answer arrives from a task asking that node, see
:meth:`PendingRequests.expect_remote`). Either way the waiter holds one future of the
stored result and the time it was stored, and whoever waits removes the entry with
:meth:`PendingRequests.drop` when it stops waiting (answered, timed out or cancelled).

An answer counts only when it comes from the link the request went to and names the case
the request was for; when a link ends, every request that went to it fails with
:class:`~server.errors.AgentGone`. Nothing here reads or writes the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from proto import messages as m

from .errors import AgentGone, RelayError

#: A stored result and when the server stored it.
Answer = tuple[m.Result, datetime]
#: Whatever a request was sent on (an agent link); compared by identity only.
Owner = TypeVar("Owner")


@dataclass(slots=True)
class Pending(Generic[Owner]):
    """One request waiting for its result."""

    #: the link the request went to; ``None``: another node relays it (``task`` asks it)
    owner: Owner | None
    case: str
    future: asyncio.Future[Answer]
    task: asyncio.Task[None] | None = field(default=None)


class PendingRequests(Generic[Owner]):
    """The requests of this node waiting for an agent's result, by request id."""

    def __init__(self) -> None:
        self._waiting: dict[str, Pending[Owner]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._waiting

    def expect(self, request_id: str, owner: Owner, case: str) -> asyncio.Future[Answer]:
        """Wait for the result of ``request_id``, sent (or about to be sent) on ``owner``."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = Pending(owner, case, future)
        return future

    def expect_remote(self, request_id: str, case: str) -> asyncio.Future[Answer]:
        """Wait for the result of ``request_id``, which another node will relay; start the
        asking with :meth:`ask_remote` once that node is known."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = Pending(None, case, future)
        return future

    def owner(self, request_id: str) -> Owner | None:
        """The link ``request_id`` went to (``None``: unknown, or relayed by another node)."""
        entry = self._waiting.get(request_id)
        return None if entry is None else entry.owner

    def ask_remote(self, request_id: str, asking: Coroutine[Any, Any, Answer]) -> None:
        """Run ``asking`` (a request through the bus) and settle ``request_id`` with what it
        returns; a timeout or a :class:`RelayError` makes the request fail with
        :class:`AgentGone`.
        :meth:`drop` cancels it."""
        entry = self._waiting.get(request_id)
        if entry is None:
            asking.close()
            return
        future = entry.future

        async def ask() -> None:
            try:
                answer = await asking
            except (TimeoutError, RelayError) as exc:
                if not future.done():
                    future.set_exception(AgentGone(str(exc)))
                return
            if not future.done():
                future.set_result(answer)

        entry.task = asyncio.create_task(ask())

    def fail(self, request_id: str, error: BaseException) -> None:
        """``request_id`` cannot be answered (e.g. its agent is on no node)."""
        entry = self._waiting.get(request_id)
        if entry is not None and not entry.future.done():
            entry.future.set_exception(error)

    def answer(self, request_id: str, owner: Owner, case: str, result: m.Result,
               stored_at: datetime) -> bool:
        """Hand ``result`` to the waiter of ``request_id`` if it came from the link the
        request went to, for its case, and nobody answered yet; ``False`` otherwise."""
        entry = self._waiting.get(request_id)
        if (entry is None or entry.owner is not owner or entry.case != case
                or entry.future.done()):
            return False
        entry.future.set_result((result, stored_at))
        return True

    def gone(self, owner: Owner) -> None:
        """``owner``'s connection ended: its requests fail with :class:`AgentGone`."""
        for entry in self._waiting.values():
            if entry.owner is owner and not entry.future.done():
                entry.future.set_exception(AgentGone())

    def drop(self, request_id: str) -> None:
        """Stop waiting for ``request_id``: forget it, cancel what still runs for it."""
        entry = self._waiting.pop(request_id, None)
        if entry is None:
            return
        if entry.task is not None:
            entry.task.cancel()
        if not entry.future.done():
            entry.future.cancel()
