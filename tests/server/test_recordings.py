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


async def test_recordings_from_before_0009_stay_readable_marked_not_sealed(
        tmp_path: Path) -> None:
    """Migration 0009 on a store holding a plaintext recording: kept, ``sealed`` false, no
    tunnel; tunnels and quota counts work on the migrated store."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    url = url_for(tmp_path / "old.db")
    s = await Store.open(url)
    try:
        await enroll(s, "a")
        case, _ = await s.open_case(agent_id="a", description="x", request_id="r1", now=T0)
    finally:
        await s.close()
    data = b'{"version": 2, "width": 80, "height": 24}\n'
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: _downgrade(c, "0006"))  # the older schema
            assert not (await conn.execute(sa.text(
                "SELECT name FROM sqlite_master WHERE name = 'tunnels'"))).first()
            await conn.execute(sa.text(
                "INSERT INTO recordings (recording_id, agent_id, case_number, tech, kind, "
                "started_at, ended_at, size, sha256, data, received_at) VALUES ('rec-old', "
                "'a', :case, 'alice', 'shell', :t, NULL, :size, :sha, :data, :t)"),
                {"case": case.number, "t": T0, "size": len(data),
                 "sha": hashlib.sha256(data).digest(), "data": data})
    finally:
        await engine.dispose()
    s = await Store.open(url)  # upgrades to head
    try:
        (old,) = await s.list_recordings(case.number)
        assert (old.sealed, old.tunnel_id, old.key_fingerprint) == (False, None, None)
        got = await s.get_recording("rec-old")
        assert got is not None and got.data == data
        await s.tunnel_opened(tunnel_id="tn-1", agent_id="a", case=case.number, tech="alice",
                              key_fingerprint="SHA256:k", now=T0)
        await s.tunnel_closed("tn-1", T0 + timedelta(minutes=1))
        await s.tunnel_closed("tn-1", T0 + timedelta(minutes=9))  # once only
        tunnel = await s.get_tunnel("tn-1")
        assert tunnel is not None and tunnel.closed_at == T0 + timedelta(minutes=1)
        assert await s.find_tunnels(agent_id="a", case=case.number, tech="alice",
                                    started=T0 + timedelta(seconds=5),
                                    slack=timedelta(0)) == [tunnel]
        assert await s.find_tunnels(agent_id="a", case=case.number, tech="bob",
                                    started=T0, slack=timedelta(0)) == []
        usage = await s.recording_usage("a", T0 + timedelta(seconds=30))
        assert (usage.bytes_last_hour, usage.count_last_minute) == (len(data), 1)
        usage = await s.recording_usage("a", T0 + timedelta(hours=2))
        assert (usage.bytes_last_hour, usage.count_last_minute) == (0, 0)
    finally:
        await s.close()


def _downgrade(sync_conn: object, revision: str) -> None:
    from alembic import command

    from tests.server.test_store import alembic_config

    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.downgrade(cfg, revision)


def test_a_v2_technician_gets_no_v3_fields_and_no_sealed_data() -> None:
    from datetime import UTC, datetime

    from msgspec import json as msgjson

    from proto import messages as m
    from server.recordings import for_version

    info = m.RecordingInfo(id="rec-1", case="HW-20261206-0001", tech="alice",
                           kind=m.RecordingKind.SHELL, started_at=datetime(2026, 1, 1,
                                                                           tzinfo=UTC),
                           ended_at=None, size=3, sha256="00", sealed=True, agent="ag-1",
                           tunnel="tn-1")
    msg = m.RecordingData(re="q1", case=info.case, recordings=[info], info=info,
                          data=b"sealed")
    assert for_version(msg, 3) is msg
    refused = for_version(msg, 2)
    assert isinstance(refused, m.Error) and "upgrade hw-tech" in refused.message
    listing = for_version(m.RecordingData(re="q1", case=info.case, recordings=[info]), 2)
    assert isinstance(listing, m.RecordingData)
    wire = msgjson.encode(listing)
    assert b"sealed" not in wire and b"tunnel" not in wire and b"agent" not in wire
