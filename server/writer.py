"""Group commit: many concurrent writes of the server share one store transaction.

Under load (a fan-out to thousands of agents, their results arriving together) each result
and audit entry used to be its own transaction: one fsync and one trip through the store's
writer each. :class:`Writer` queues write jobs and runs whatever is queued as one
:meth:`server.store.Store.run_batch` transaction, so the cost per write drops with the load;
a lone write still commits at once (a batch of one). A caller gets its own job's value, or
its own ``NotFound``/``StoreError``; a failure of the transaction itself reaches every caller
of that batch (nothing of it was stored, and each retries as before: an agent resends from
its outbox).

A job gets the batch's connection and may only hand it to the store's ``*_in`` methods: on
SQLite it is the fast path's :class:`server.store.sqlitewriter.SqliteBatch` (plain sqlite3,
``server/store/sqlitewriter.py``), on PostgreSQL an ``AsyncConnection``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .store import Store, StoreError

log = logging.getLogger("hw.server.writer")

#: a write job: called with the batch's connection (see the module docstring)
Job = Callable[[Any], Awaitable[Any]]
#: Jobs committed together at most (bounds a transaction's size and the wait of the last).
MAX_BATCH = 500


class Writer:
    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.jobs = 0

    async def submit(self, job: Job) -> Any:
        """Run ``job`` in the next batch; its value, or its exception, is returned/raised."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, future))
        return await future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(job, fut) for job, fut in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                values = await self.store.run_batch([job for job, _ in live])
            except Exception as exc:  # the transaction failed: nothing of it is stored
                if not isinstance(exc, StoreError):
                    log.exception("a batch of %d writes failed", len(live))
                for _job, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.jobs += len(live)
            for (_job, fut), value in zip(live, values, strict=True):
                if fut.done():
                    continue
                if isinstance(value, StoreError):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
