"""The store's session recordings (migration 0004): once per id, the case's agent only,
listed newest first without their data, fetched with their hash; audited."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from server.store import NotFound, Store
from tests.server.test_store import T0, enroll, url_for


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(url_for(tmp_path / "store.db"))
    try:
        yield s
    finally:
        await s.close()


async def test_recordings_are_kept_once_for_the_cases_agent(store: Store) -> None:
    await enroll(store, "a")
    await enroll(store, "b")
    case, _ = await store.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    data = b'{"version": 2}\n[0.5, "o", "ok"]\n'
    args = dict(agent_id="a", case=case.number, tech="alice", kind="shell", started_at=T0,
                ended_at=T0 + timedelta(seconds=3), now=T0)
    assert await store.store_recording(recording_id="rec-1", data=data, **args) is True
    assert await store.store_recording(recording_id="rec-1", data=b"other", **args) is False
    later = {**args, "kind": "sftp", "started_at": T0 + timedelta(minutes=1)}
    assert await store.store_recording(recording_id="rec-2", data=b"{}\n", **later) is True
    with pytest.raises(NotFound):
        await store.store_recording(recording_id="rec-3", data=data,
                                    **{**args, "agent_id": "b"})
    listed = await store.list_recordings(case.number)
    assert [r.recording_id for r in listed] == ["rec-2", "rec-1"]
    assert all(r.data == b"" for r in listed) and listed[1].size == len(data)
    got = await store.get_recording("rec-1")
    assert got is not None and got.data == data and got.kind == "shell"
    assert got.sha256 == hashlib.sha256(data).digest() and got.started_at == T0
    assert await store.get_recording("rec-9") is None
    audit = await store.list_audit(subject=case.number)
    assert [e.event for e in audit].count("recording.stored") == 2
