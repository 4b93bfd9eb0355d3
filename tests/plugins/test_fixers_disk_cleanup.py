"""disk.cleanup in a sandbox: the allowlist is two temp dirs of the test.

A sandbox file is written now and aged with ``os.utime``, which cannot age its inode-change
time (ctime); the sandbox records the ctime such a file would show (its age) and the fixer
reads that recorded OS reading. Files made without it (``young=True``) keep the real ctime,
as another program's working file with a copied-in old mtime does. Which files are open is
never mocked: the tests hold them open, in this process or a child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from plugins.api import FixContext, FixPlan, FixRefused
from plugins.fixers import disk_cleanup

DAY = 86400.0


class Sandbox:
    def __init__(self, base: Path) -> None:
        self.base = Path(os.path.realpath(base))
        self.temp = self.base / "temp"
        self.cache = self.base / "cache"
        self.outside = self.base / "outside"
        self.workdir = self.base / "home" / "fixes"
        self.ctimes: dict[tuple[int, int], float] = {}
        for d in (self.temp, self.cache, self.outside):
            d.mkdir()

    def file(self, path: Path, days_old: float, size: int = 100, *, young: bool = False
             ) -> Path:
        """A file last used ``days_old`` ago; ``young``: created just now (real ctime)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        stamp = time.time() - days_old * DAY
        os.utime(path, (stamp, stamp))
        st = path.stat()
        if young:
            self.ctimes.pop((st.st_dev, st.st_ino), None)
        else:
            self.ctimes[(st.st_dev, st.st_ino)] = stamp
        return path

    def inode_changed(self, st: os.stat_result) -> float:
        return self.ctimes.get((st.st_dev, st.st_ino), st.st_ctime)

    def ctx(self, **args: object) -> FixContext:
        return FixContext(args=args, workdir=self.workdir)


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    sandbox = Sandbox(tmp_path)
    monkeypatch.setattr(disk_cleanup, "default_locations", lambda: [sandbox.temp, sandbox.cache])
    monkeypatch.setattr(disk_cleanup, "_inode_changed", sandbox.inode_changed)
    return sandbox


@pytest.fixture
def held_open(box: Sandbox) -> Iterator[Path]:
    """An old file another process (a child Python) holds open, like a test run's log."""
    path = box.file(box.temp / "pytest-of-li" / "pytest-7" / "live.log", 30)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nf = open(sys.argv[1])\nprint('open', "
         "flush=True)\ntime.sleep(120)", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "open"
        yield path
    finally:
        child.kill()
        child.wait()


def planned(fix_plan: FixPlan) -> set[str]:
    return {f["path"] for f in fix_plan.data["files"]}


def test_default_locations_are_temp_and_cache() -> None:
    locations = [str(p) for p in disk_cleanup.default_locations()]
    import tempfile

    assert locations[0] == tempfile.gettempdir()
    if sys.platform.startswith("linux"):
        assert len(locations) == 2
        assert locations[1].endswith(".cache") or locations[1] == os.environ["XDG_CACHE_HOME"]


def test_allowed_roots_drop_filesystem_root_and_home(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(disk_cleanup, "default_locations",
                        lambda: [Path("/"), Path.home(), tmp_path, tmp_path / "nested"])
    (tmp_path / "nested").mkdir()
    assert disk_cleanup.allowed_roots() == [Path(os.path.realpath(tmp_path))]


def test_plan_lists_old_files_only_and_changes_nothing(box: Sandbox) -> None:
    old = {box.file(box.temp / "a.log", 9), box.file(box.cache / "app" / "deep" / "b.bin", 30)}
    new = box.file(box.temp / "fresh.log", 1)
    fix_plan = disk_cleanup.plan(box.ctx())
    assert planned(fix_plan) == {str(p) for p in old}
    assert fix_plan.reversible and fix_plan.needs_privileges == ""
    assert fix_plan.data["total_bytes"] == 200
    assert any(line.startswith(f"move {box.temp / 'a.log'} (") and "9 days old" in line
               for line in fix_plan.changes)
    assert all(p.exists() for p in old) and new.exists()
    assert not box.workdir.exists()
    json.dumps(dict(fix_plan.data))  # JSON-safe


def test_days_argument(box: Sandbox) -> None:
    box.file(box.temp / "a.log", 9)
    assert planned(disk_cleanup.plan(box.ctx(days=10))) == set()
    assert len(planned(disk_cleanup.plan(box.ctx(days=8)))) == 1
    for bad in (0, -1, "7", True, 10**6):
        with pytest.raises(FixRefused, match="days"):
            disk_cleanup.plan(box.ctx(days=bad))


def test_paths_narrow_inside_the_allowlist(box: Sandbox) -> None:
    inside = box.file(box.cache / "app" / "x.bin", 30)
    box.file(box.cache / "other" / "y.bin", 30)
    fix_plan = disk_cleanup.plan(box.ctx(paths=[str(box.cache / "app")]))
    assert planned(fix_plan) == {str(inside)}


def test_paths_outside_the_allowlist_are_refused(box: Sandbox) -> None:
    box.file(box.outside / "precious.doc", 400)
    with pytest.raises(FixRefused, match="outside the clean-up locations"):
        disk_cleanup.plan(box.ctx(paths=[str(box.outside)]))
    with pytest.raises(FixRefused, match="outside the clean-up locations"):
        disk_cleanup.plan(box.ctx(paths=[str(box.temp / ".." / "outside")]))
    (box.temp / "link").symlink_to(box.outside)
    with pytest.raises(FixRefused, match="outside the clean-up locations"):
        disk_cleanup.plan(box.ctx(paths=[str(box.temp / "link")]))
    with pytest.raises(FixRefused, match="not an absolute path"):
        disk_cleanup.plan(box.ctx(paths=["temp"]))
    with pytest.raises(FixRefused, match="does not exist"):
        disk_cleanup.plan(box.ctx(paths=[str(box.temp / "nope")]))


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlinks_are_not_followed_nor_moved(box: Sandbox) -> None:
    precious = box.file(box.outside / "precious.doc", 400)
    box.file(box.outside / "dir" / "inner.doc", 400)
    (box.temp / "to_file").symlink_to(precious)
    (box.temp / "to_dir").symlink_to(box.outside / "dir", target_is_directory=True)
    os.utime(box.temp / "to_file", (time.time() - 50 * DAY,) * 2, follow_symlinks=False)
    old = box.file(box.temp / "old.tmp", 20)
    fix_plan = disk_cleanup.plan(box.ctx())
    assert planned(fix_plan) == {str(old)}
    assert fix_plan.data["skipped"]["symlinks"] == 2
    outcome = disk_cleanup.apply(box.ctx(), fix_plan)
    assert outcome.ok
    assert (box.temp / "to_file").is_symlink() and (box.temp / "to_dir").is_symlink()
    assert precious.exists() and (box.outside / "dir" / "inner.doc").exists()


def test_apply_quarantines_verify_and_rollback_restore_identical(box: Sandbox) -> None:
    files = [box.file(box.temp / "a.log", 9, 1000), box.file(box.cache / "x" / "y.bin", 30, 5000)]
    content = {p: (p.read_bytes(), p.stat().st_mtime) for p in files}
    for path, (_, mtime) in content.items():  # reading may have set the access time
        os.utime(path, (mtime, mtime))
    fresh = box.file(box.temp / "fresh.log", 0)
    fix_plan = disk_cleanup.plan(box.ctx())
    outcome = disk_cleanup.apply(box.ctx(), fix_plan)
    assert outcome.ok, outcome.summary
    assert not any(p.exists() for p in files) and fresh.exists()
    details = outcome.details
    assert details["files_moved"] == 2 and details["bytes_moved"] == 6000
    assert details["bytes_freed"] + details["bytes_freed_on_purge"] == 6000
    qdir = box.workdir / "quarantine" / fix_plan.data["fix_id"]
    assert (qdir / "files" / "0" / "a.log").read_bytes() == content[files[0]][0]
    assert (qdir / "files" / "1" / "x" / "y.bin").read_bytes() == content[files[1]][0]
    manifest = json.loads((qdir / "manifest.json").read_text())
    assert {e["source"] for e in manifest["entries"]} == {str(p) for p in files}
    assert disk_cleanup.verify(box.ctx(), fix_plan, outcome) == ""
    assert outcome.undo == {"fix_id": fix_plan.data["fix_id"]}

    undone = disk_cleanup.rollback(box.ctx(), outcome)
    assert undone.ok, undone.summary
    for path, (data, mtime) in content.items():
        assert path.read_bytes() == data
        assert path.stat().st_mtime == mtime
    assert not qdir.exists()


def test_rollback_never_overwrites_a_new_file(box: Sandbox) -> None:
    path = box.file(box.temp / "a.log", 9)
    outcome = disk_cleanup.apply(box.ctx(), disk_cleanup.plan(box.ctx()))
    path.write_text("new content")
    undone = disk_cleanup.rollback(box.ctx(), outcome)
    assert not undone.ok and undone.details["files_not_restored"] == 1
    assert path.read_text() == "new content"
    assert undone.undo == outcome.undo  # still in the quarantine, can be retried


def test_changed_file_is_skipped_and_verify_says_what_remains(box: Sandbox) -> None:
    kept = box.file(box.temp / "busy.log", 9)
    box.file(box.temp / "idle.log", 9)
    fix_plan = disk_cleanup.plan(box.ctx())
    os.utime(kept, (time.time(),) * 2)
    outcome = disk_cleanup.apply(box.ctx(), fix_plan)
    assert outcome.ok and outcome.details["files_moved"] == 1
    assert outcome.details["skipped"] == [{"path": str(kept), "reason": "changed since the plan"}]
    assert kept.exists()
    assert disk_cleanup.verify(box.ctx(), fix_plan, outcome) == ""  # busy.log changed: not ours
    os.utime(kept, (time.time() - 9 * DAY,) * 2)
    assert planned(disk_cleanup.plan(box.ctx())) == {str(kept)}


def test_tampered_plan_cannot_move_files_outside(box: Sandbox) -> None:
    precious = box.file(box.outside / "precious.doc", 400)
    fix_plan = disk_cleanup.plan(box.ctx())
    st = precious.stat()
    forged = FixPlan(**{**fix_plan.__dict__, "data": {**fix_plan.data, "files": [
        {"path": str(precious), "size": st.st_size, "mtime": st.st_mtime, "root": 0}]}})
    outcome = disk_cleanup.apply(box.ctx(), forged)
    assert not outcome.ok
    assert outcome.details["skipped"][0]["reason"] == "outside the clean-up locations"
    assert precious.exists()
    bad_id = FixPlan(**{**fix_plan.__dict__, "data": {**fix_plan.data, "fix_id": "../../x"}})
    with pytest.raises(FixRefused, match="fix id"):
        disk_cleanup.apply(box.ctx(), bad_id)


def test_agent_workdir_inside_an_allowed_location_is_left_alone(box: Sandbox) -> None:
    box.workdir = box.temp / "agent" / "fixes"
    mine = box.file(box.workdir / "quarantine" / "old" / "manifest.json", 30)
    other = box.file(box.temp / "other.tmp", 30)
    assert planned(disk_cleanup.plan(box.ctx())) == {str(other)}
    assert mine.exists()


def test_verify_reports_files_still_in_place(box: Sandbox) -> None:
    path = box.file(box.temp / "a.log", 9)
    fix_plan = disk_cleanup.plan(box.ctx())
    outcome = disk_cleanup.apply(box.ctx(), fix_plan)
    disk_cleanup.rollback(box.ctx(), outcome)
    assert path.exists()
    assert "1 of the planned files" in disk_cleanup.verify(box.ctx(), fix_plan, outcome)


def test_purge_quarantine_deletes_only_old_ones(box: Sandbox) -> None:
    box.file(box.temp / "a.log", 9)
    fix_plan = disk_cleanup.plan(box.ctx())
    outcome = disk_cleanup.apply(box.ctx(), fix_plan)
    qdir = box.workdir / "quarantine" / fix_plan.data["fix_id"]
    assert disk_cleanup.purge_quarantine(box.workdir, timedelta(days=1)) == []
    assert qdir.exists()
    later = time.time() + 2 * DAY
    purged = disk_cleanup.purge_quarantine(box.workdir, timedelta(days=1), now=later)
    assert purged == [fix_plan.data["fix_id"]]
    assert not qdir.exists()
    assert not disk_cleanup.rollback(box.ctx(), outcome).ok
    assert disk_cleanup.purge_quarantine(box.base / "nowhere", timedelta(0)) == []


def test_nothing_to_clean(box: Sandbox) -> None:
    box.file(box.temp / "fresh", 0)
    fix_plan = disk_cleanup.plan(box.ctx())
    assert fix_plan.changes == [] and "nothing to clean" in fix_plan.summary
    outcome = disk_cleanup.apply(box.ctx(), fix_plan)
    assert outcome.ok and outcome.undo is None


def test_the_agents_whole_home_is_protected(box: Sandbox) -> None:
    home = box.temp / "agent-home"
    key = box.file(home / "agent.key", 30)
    other = box.file(box.temp / "other.tmp", 30)
    ctx = FixContext(args={}, workdir=home / "fixes", protected=(home,))
    assert planned(disk_cleanup.plan(ctx)) == {str(other)}
    assert key.exists()


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="no O_NOFOLLOW on this platform")
def test_a_directory_swapped_for_a_symlink_is_not_followed_by_the_move(box: Sandbox) -> None:
    """The race a local user could run against a root agent: plan, then swap a directory
    on the path for a symlink to somewhere precious; the move must refuse."""
    precious = box.file(box.outside / "shadow", 400)
    (box.temp / "d").mkdir()
    (box.temp / "d").rmdir()
    (box.temp / "d").symlink_to(box.outside, target_is_directory=True)
    destination = box.base / "q" / "shadow"
    destination.parent.mkdir()
    with pytest.raises(OSError):
        disk_cleanup._move_nofollow(box.temp, box.temp / "d" / "shadow", destination)
    assert precious.exists() and not destination.exists()
    plain = box.file(box.temp / "e" / "f.tmp", 30)
    disk_cleanup._move_nofollow(box.temp, plain, box.base / "q" / "f.tmp")
    assert not plain.exists() and (box.base / "q" / "f.tmp").exists()


def test_a_file_another_process_holds_open_is_left_alone_and_the_plan_says_so(
        box: Sandbox, held_open: Path) -> None:
    idle = box.file(box.temp / "idle.log", 30)
    fix_plan = disk_cleanup.plan(box.ctx())
    assert planned(fix_plan) == {str(idle)}
    assert fix_plan.data["skipped"]["open"] == 1
    assert fix_plan.data["left_alone"]["open"] == [str(held_open)]
    assert "Left alone: 1 file open by a running program" in fix_plan.summary
    assert "1 个文件正被程序打开" in fix_plan.summary_zh
    assert f"leave {held_open} alone: open by a running program" in fix_plan.changes
    disk_cleanup.apply(box.ctx(), fix_plan)
    assert held_open.exists() and not idle.exists()


def test_a_live_file_with_an_old_mtime_is_left_alone(box: Sandbox) -> None:
    """pytest's and builds' working files may carry an old mtime; their ctime is new."""
    live = box.file(box.temp / "pytest-of-li" / "pytest-7" / "copied.txt", 30, young=True)
    fix_plan = disk_cleanup.plan(box.ctx(days=1))
    assert planned(fix_plan) == set()
    assert fix_plan.data["skipped"]["young"] == 1 and fix_plan.data["min_age_days"] == 1
    assert "nothing to clean" in fix_plan.summary
    assert ("Left alone: 1 file written, read or created within the last 1 day (safe age)"
            in fix_plan.summary)
    assert any(line.startswith(f"leave {live} alone: written, read or created")
               for line in fix_plan.changes)
    assert disk_cleanup.apply(box.ctx(), fix_plan).ok and live.exists()


def test_a_file_opened_after_the_plan_is_not_moved(box: Sandbox) -> None:
    path = box.file(box.temp / "a.log", 9)
    fix_plan = disk_cleanup.plan(box.ctx())
    assert planned(fix_plan) == {str(path)}
    with path.open("rb"):  # this process, as the OS reports it: no mock
        outcome = disk_cleanup.apply(box.ctx(), fix_plan)
    assert not outcome.ok and path.exists()
    assert outcome.details["skipped"] == [{"path": str(path),
                                           "reason": "open by a running program"}]


def test_left_alone_counts_beyond_the_named_ones(box: Sandbox) -> None:
    n = disk_cleanup.MAX_LEFT_ALONE_LISTED + 2
    for i in range(n):
        box.file(box.temp / f"young{i}.tmp", 30, young=True)
    fix_plan = disk_cleanup.plan(box.ctx())
    assert fix_plan.data["skipped"]["young"] == n
    assert fix_plan.changes[-1].startswith("... and 2 more files left alone: written")
    assert f"Left alone: {n} files written" in fix_plan.summary


def test_open_files_reads_this_process(tmp_path: Path) -> None:
    path = tmp_path / "held"
    path.write_text("x")
    with path.open():
        live = disk_cleanup.open_files()
        assert (path, path.stat()) in live
    link = tmp_path / "hard"
    os.link(path, link)
    with path.open():
        assert (link, link.stat()) in disk_cleanup.open_files()  # the same inode
    assert (path, path.stat()) not in disk_cleanup.open_files()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user needs root")
def test_another_users_old_file_is_counted_never_named(
        box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other users' paths are theirs: the technician's plan counts them and names none.

    The agent runs as user 4141 here (its uid is an OS reading); root gives the files out.
    """
    monkeypatch.setattr(disk_cleanup, "_uid", lambda: 4141)
    theirs = box.file(box.temp / "someone-else" / "diary.txt", 30)
    os.chown(theirs, 4242, 4242)
    mine = box.file(box.temp / "old.bin", 30)
    os.chown(mine, 4141, 4141)
    plan = disk_cleanup.plan(box.ctx())
    text = "\n".join([plan.summary, plan.summary_zh, *plan.changes, json.dumps(plan.data)])
    assert "diary.txt" not in text and "someone-else" not in text
    assert plan.data["skipped"]["not_owned"] == 1
    assert "another user's" in plan.summary
    assert [f["path"] for f in plan.data["files"]] == [str(mine)]
