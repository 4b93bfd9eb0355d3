"""disk.cleanup's journal (issue 13, break 5): every move is journaled before it is made,
an apply cut off half-way is recovered from the journal, and a journal that cannot be
written (disk full) stops the moves. The e2e test kills a real agent; these cover the
cases a kill cannot pick deterministically."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from plugins.api import FixContext, FixOutcome
from plugins.fixers import disk_cleanup

OLD = time.time() - 30 * 86400


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (the test also drops the manifest write)."""


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = Path(os.path.realpath(tmp_path)) / "temp"
    root.mkdir()
    ctimes: dict[int, float] = {}
    for i in range(20):
        f = root / "cache" / f"f{i:02}.bin"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(bytes([i]) * (100 + i))
        os.utime(f, (OLD, OLD))
        ctimes[f.stat().st_ino] = OLD
    monkeypatch.setattr(disk_cleanup, "default_locations", lambda: [root])
    monkeypatch.setattr(disk_cleanup, "_inode_changed",
                        lambda st: ctimes.get(st.st_ino, st.st_ctime))
    return root


def _ctx(tmp_path: Path) -> FixContext:
    return FixContext(args={"days": 7}, workdir=tmp_path / "home" / "fixes")


def _kill_after(monkeypatch: pytest.MonkeyPatch, moves: int) -> list[str]:
    """Make apply stop dead after ``moves`` moves; return the journal seen before each."""
    real = disk_cleanup._move_nofollow
    seen: list[str] = []

    def move(root: Path, source: Path, destination: Path) -> None:
        qdir = destination
        while qdir.name != "files":
            qdir = qdir.parent
        journal = (qdir.parent / disk_cleanup.JOURNAL).read_text()
        assert json.dumps(str(source)) in journal, "journaled before the move"
        if len(seen) == moves:
            raise _Killed
        real(root, source, destination)
        seen.append(str(source))

    monkeypatch.setattr(disk_cleanup, "_move_nofollow", move)
    monkeypatch.setattr(disk_cleanup, "_write_manifest", lambda qdir, manifest: None)
    return seen


def test_a_killed_apply_is_recovered_from_its_journal_and_rolled_back(
        temp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    plan = disk_cleanup.plan(ctx)
    assert len(plan.data["files"]) == 20
    real_manifest = disk_cleanup._write_manifest
    moved = _kill_after(monkeypatch, 7)
    with pytest.raises(_Killed):
        disk_cleanup.apply(ctx, plan)
    monkeypatch.setattr(disk_cleanup, "_write_manifest", real_manifest)
    qdir = ctx.workdir / "quarantine" / plan.data["fix_id"]
    assert not (qdir / "manifest.json").exists()
    assert len(list(temp.rglob("*.bin"))) == 13

    outcome = disk_cleanup.recover(ctx, plan)
    assert not outcome.ok and outcome.undo == {"fix_id": plan.data["fix_id"]}
    assert outcome.summary.startswith("Interrupted after moving 7 of the 20 planned files")
    assert {e["source"] for e in outcome.details["manifest"]} == set(moved)
    # The 8th file was journaled but never moved: it is not in the manifest.
    assert (qdir / "manifest.json").exists()

    undone = disk_cleanup.rollback(ctx, outcome)
    assert undone.ok and undone.details["files_restored"] == 7
    assert len(list(temp.rglob("*.bin"))) == 20 and not qdir.exists()


def test_rollback_reads_the_journal_when_no_manifest_was_written(
        temp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    plan = disk_cleanup.plan(ctx)
    real_manifest = disk_cleanup._write_manifest
    _kill_after(monkeypatch, 3)
    with pytest.raises(_Killed):
        disk_cleanup.apply(ctx, plan)
    monkeypatch.setattr(disk_cleanup, "_write_manifest", real_manifest)
    undone = disk_cleanup.rollback(ctx, FixOutcome(False, "", undo={
        "fix_id": plan.data["fix_id"]}))
    assert undone.ok and undone.details["files_restored"] == 3
    assert len(list(temp.rglob("*.bin"))) == 20


def test_a_kill_before_the_first_move_changed_nothing(
        temp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    plan = disk_cleanup.plan(ctx)
    outcome = disk_cleanup.recover(ctx, plan)  # the agent died before apply began
    assert not outcome.ok and outcome.undo is None
    assert "nothing changed" in outcome.summary and outcome.details["files_moved"] == 0


def test_a_journal_that_cannot_be_written_stops_the_moves(
        temp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    plan = disk_cleanup.plan(ctx)
    real = disk_cleanup._Journal.append
    lines = [0]

    def append(self: Any, record: Any) -> None:
        lines[0] += 1
        if lines[0] > 5:  # the header and a batch of 4 moves fit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, record)

    monkeypatch.setattr(disk_cleanup._Journal, "append", append)
    monkeypatch.setattr(disk_cleanup, "JOURNAL_BATCH", 4)  # one fsync per 4 moves
    outcome = disk_cleanup.apply(ctx, plan)
    assert not outcome.ok and outcome.details["files_moved"] == 4
    assert "journal could not be written" in outcome.summary
    assert "free disk space" in outcome.summary
    assert len(list(temp.rglob("*.bin"))) == 16, "no file moved without its journal line"
    journal = (ctx.workdir / "quarantine" / plan.data["fix_id"] / "journal.jsonl")
    assert len(journal.read_text().splitlines()) == 5
    assert disk_cleanup.rollback(ctx, outcome).ok
    assert len(list(temp.rglob("*.bin"))) == 20
