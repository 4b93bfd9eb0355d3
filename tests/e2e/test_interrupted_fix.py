"""An agent killed with SIGKILL in the middle of ``disk.cleanup`` (issue 13, break 5):
after the restart the technician gets an interrupted outcome with the partial manifest,
and undoing the fix brings every moved file back."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.harness import Harness, wait_until

pytestmark = pytest.mark.e2e

OLD = time.time() - 30 * 86400
FILES = 300
STOP_AFTER = 128


def _digest(root: Path) -> dict[str, str]:
    """Path -> content hash (reading sets the access time: age the files afterwards)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_cleanup_killed_half_way_is_reported_and_can_be_undone(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    sandbox = tmp_path / "tmp"
    junk = sandbox / "old-cache"
    for i in range(FILES):
        f = junk / f"d{i % 7}" / f"junk{i:03}.bin"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(os.urandom(64) * (1 + i % 5))
    before = _digest(junk)
    for f in junk.rglob("*.bin"):
        os.utime(f, (OLD, OLD))
    aged = tmp_path / "aged.json"
    aged.write_text(json.dumps({str(f): OLD for f in junk.rglob("*.bin")}))
    marker = tmp_path / "stopped"
    env = {"TMPDIR": str(sandbox), "HOME": str(tmp_path / "home"), "HW_AGED_FILES": str(aged)}
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    agent = h.start_agent(home, env={**env, "HW_PLUGINS": "agedfiles,stopmoves",
                                     "HW_STOP_AFTER_MOVES": str(STOP_AFTER),
                                     "HW_STOP_MARKER": str(marker)})
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    h.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case, "--tech",
          "alice", "--scopes", "diagnostics,fix", "--no-fix-approval")
    fix = h.spawn("fix", "hw-tech", "--home", str(alice), "fix", case, "disk.cleanup",
                  "--arg", "days=7", "--json")
    wait_until(marker.exists, timeout=60, what="the clean-up to stop after 128 moves")
    agent.stop(signal.SIGKILL)
    fix.stop()

    left = sorted(junk.rglob("*.bin"))
    assert len(left) == FILES - STOP_AFTER, "128 files were moved before the kill"
    (qdir,) = (home / "fixes" / "quarantine").iterdir()
    assert not (qdir / "manifest.json").exists(), "killed: the manifest was never written"
    journal = (qdir / "journal.jsonl").read_text().splitlines()
    assert len(journal) >= 1 + STOP_AFTER, "every move was journaled before it was made"

    # Restarted (without the stopping plugin): the interrupted fix is found and reported.
    h.start_agent(home, env=env)

    def interrupted() -> dict[str, object] | None:
        results = h.tech_json(alice, "case", case)["results"]
        fixes = [r for r in results if r["action"] == "fix" and r.get("fix")]
        return fixes[-1]["fix"] if fixes else None

    report = wait_until(interrupted, timeout=60, what="the interrupted fix's result")
    assert report["applied"] is True and report["ok"] is False
    assert report["verified"] is False
    assert report["outcome"].startswith("Interrupted: the agent stopped")
    assert f"Interrupted after moving {STOP_AFTER} of the {FILES} planned files" in (
        report["outcome"])
    details = report["details"]
    assert details["interrupted"] is True and details["files_moved"] == STOP_AFTER
    manifest = {e["source"] for e in details["manifest"]}
    assert len(manifest) == STOP_AFTER and not manifest & {str(p) for p in left}
    assert all(not Path(p).exists() for p in manifest)
    assert (qdir / "manifest.json").exists(), "the manifest was rebuilt from the journal"
    state = h.tech_json(alice, "case", case)["case"]["state"]
    assert state != "resolved"
    log = h.run("hw-agent", "log", "--home", str(home)).stdout
    assert "fix-interrupted" in log

    # The customer restores the files: every one is back, byte for byte.
    fixes = json.loads(h.run("hw-agent", "fixes", "list", "--home", str(home),
                             "--json").stdout)
    (rec,) = fixes
    assert rec["state"] == "interrupted" and rec["undoable"] is True
    out = h.run("hw-agent", "fixes", "undo", "--home", str(home), rec["id"])
    assert f"Restored {STOP_AFTER} files" in out.stdout
    assert _digest(junk) == before
    assert not qdir.exists()
    again = h.run("hw-agent", "fixes", "undo", "--home", str(home), rec["id"], check=False)
    assert again.returncode == 1 and "nothing to undo" in again.stderr
