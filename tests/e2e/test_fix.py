"""A fix the customer approves: dry-run plan, approval (or not), apply, verify, audit."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.harness import Harness, Proc, wait_until

pytestmark = pytest.mark.e2e

OLD = time.time() - 30 * 86400


def _setup(h: Harness, tmp_path: Path) -> tuple[Path, str, Path, Path]:
    """An agent whose temp dir (the cleanup allowlist) is a sandbox with old junk in it."""
    sandbox = tmp_path / "tmp"
    (sandbox / "old-cache").mkdir(parents=True)
    for i in range(3):
        f = sandbox / "old-cache" / f"junk{i}.bin"
        f.write_bytes(b"x" * 100_000)
        os.utime(f, (OLD, OLD))
    (sandbox / "fresh.txt").write_text("keep me")
    aged = tmp_path / "aged.json"  # their inode-change time as old files show it
    aged.write_text(json.dumps({str(f): OLD for f in (sandbox / "old-cache").iterdir()}))
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home, env={"TMPDIR": str(sandbox), "HOME": str(tmp_path / "home"),
                             "HW_PLUGINS": "agedfiles", "HW_AGED_FILES": str(aged)})
    case = h.help(home).splitlines()[0]
    return home, case, h.add_tech("alice"), sandbox


def _fix(h: Harness, tech: Path, case: str, *extra: str) -> Proc:
    return h.spawn("fix-" + "-".join(extra).replace("=", ""), "hw-tech", "--home", str(tech),
                   "fix", case, "disk.cleanup", "--arg", "days=7", "--json", *extra)


def test_fix_needs_the_fix_scope_and_shows_a_plan(harness: Harness, tmp_path: Path) -> None:
    h = harness
    home, case, alice, sandbox = _setup(h, tmp_path)
    p = h.run("hw-tech", "--home", str(alice), "fix", case, "disk.cleanup", "--dry-run",
              check=False)
    assert p.returncode == 1 and "no_consent" in p.stderr and "fix scope" in p.stderr
    h.grant(home, case, "alice", scopes="fix")
    out = h.tech_json(alice, "fix", case, "disk.cleanup", "--arg", "days=7", "--dry-run")
    fix = out["result"]["fix"]
    assert fix["decision"] == "dry-run" and fix["applied"] is False
    assert fix["plan"]["reversible"] is True
    assert sum("junk" in c for c in fix["plan"]["changes"]) == 3
    assert not any("fresh.txt" in c for c in fix["plan"]["changes"])
    assert len(list((sandbox / "old-cache").iterdir())) == 3, "a dry run changes nothing"


def test_customer_approves_then_the_fix_is_applied_and_verified(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    home, case, alice, sandbox = _setup(h, tmp_path)
    h.grant(home, case, "alice", scopes="diagnostics,fix")
    proc = _fix(h, alice, case)
    wait_until(lambda: "waiting for your approval" in h.run(
        "hw-agent", "consent", "status", "--home", str(home)).stdout, what="the plan")
    assert list((sandbox / "old-cache").iterdir()), "nothing changes before approval"
    h.run("hw-agent", "consent", "approve", "--home", str(home), "--case", case)
    assert proc.popen.wait(60) == 0
    fix = json.loads(proc.text())["result"]["fix"]
    assert (fix["decision"], fix["applied"], fix["ok"], fix["verified"]) == (
        "approved", True, True, True)
    assert not list((sandbox / "old-cache").glob("junk*")) and (sandbox / "fresh.txt").exists()
    detail = h.tech_json(alice, "case", case)
    assert detail["case"]["state"] == "resolved"
    log = h.run("hw-agent", "log", "--home", str(home)).stdout
    assert "fix-asked" in log and "fix-done" in log
    audit = h.run("hw-server", "audit", "show", "--home", str(h.server_home), "--json").stdout
    assert '"fix"' in audit


def test_customer_declines_and_nothing_changes(harness: Harness, tmp_path: Path) -> None:
    h = harness
    home, case, alice, sandbox = _setup(h, tmp_path)
    h.grant(home, case, "alice", scopes="fix")
    proc = _fix(h, alice, case)
    wait_until(lambda: "waiting for your approval" in h.run(
        "hw-agent", "consent", "status", "--home", str(home)).stdout, what="the plan")
    h.run("hw-agent", "consent", "decline", "--home", str(home), "--case", case)
    assert proc.popen.wait(60) == 1
    fix = json.loads(proc.text())["result"]["fix"]
    assert fix["decision"] == "declined" and fix["applied"] is False
    assert len(list((sandbox / "old-cache").iterdir())) == 3


def test_grant_without_per_fix_approval_applies_directly(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    home, case, alice, sandbox = _setup(h, tmp_path)
    h.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case, "--tech",
          "alice", "--scopes", "fix", "--no-fix-approval")
    out = h.tech_json(alice, "fix", case, "disk.almost_full", "--arg", "days=7")
    fix = out["result"]["fix"]
    assert fix["decision"] == "not-required" and fix["verified"] is True
    assert fix["plan"]["fixer"] == "disk.cleanup", "a finding code names its fixer"
    assert not list((sandbox / "old-cache").glob("junk*"))


def test_plugins_lists_probes_and_fixers_with_versions(harness: Harness, tmp_path: Path) -> None:
    h = harness
    home, case, alice, _ = _setup(h, tmp_path)
    p = h.run("hw-tech", "--home", str(alice), "plugins", case, check=False)
    assert p.returncode == 1 and "no_consent" in p.stderr
    h.grant(home, case, "alice")
    plugins = h.tech_json(alice, "plugins", case)
    kinds = {(x["kind"], x["name"]) for x in plugins}
    assert {("probe", "disk"), ("probe", "thermal"), ("fixer", "disk.cleanup")} <= kinds
    cleanup = next(x for x in plugins if x["name"] == "disk.cleanup")
    assert cleanup["version"] and "disk.almost_full" in cleanup["addresses"]


def test_one_fix_waits_for_the_customer_at_a_time(harness: Harness, tmp_path: Path) -> None:
    """The customer approves the plan they saw: a second fix cannot slip in behind it."""
    h = harness
    home, case, alice, _sandbox = _setup(h, tmp_path)
    h.grant(home, case, "alice", scopes="fix")
    first = _fix(h, alice, case)
    wait_until(lambda: "waiting for your approval" in h.run(
        "hw-agent", "consent", "status", "--home", str(home)).stdout, what="the plan")
    second = h.run("hw-tech", "--home", str(alice), "fix", case, "dns.flush", "--json",
                   check=False)
    assert second.returncode == 1
    assert json.loads(second.stdout)["result"]["fix"]["decision"] == "not-possible"
    h.run("hw-agent", "consent", "approve", "--home", str(home), "--case", case)
    assert first.popen.wait(60) == 0
    assert json.loads(first.text())["result"]["fix"]["plan"]["fixer"] == "disk.cleanup"


def test_the_technician_cannot_switch_fix_approval_off(harness: Harness, tmp_path: Path) -> None:
    h = harness
    policy = tmp_path / "policy.toml"
    policy.write_text('preapproved_scopes = ["fix"]\n')
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home, None, "--policy", str(policy))
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    answer = h.tech_json(alice, "consent-request", case, "--scopes", "fix",
                         "--no-fix-approval")
    assert answer["granted"] is True
    assert answer["grant"]["fix_needs_approval"] is True, "only the customer decides that"
