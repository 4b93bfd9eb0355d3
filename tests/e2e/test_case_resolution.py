"""A case is resolved only when nothing is left: no finding above info, no open on-site
ticket (issue 12, bug 3), with real processes: a simulated stalled fan and runaway process,
the automatic escalation, and a real process ended by ``process.terminate``."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.e2e


def test_an_unrelated_verified_fix_leaves_a_case_waiting_for_its_visit(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.init_server()
    h.run("hw-server", "field-tech", "add", "--home", str(h.server_home), "wang", "--base",
          "成都", "--skills", "hardware-repair", "--capacity", "2")
    server = h.start_server()
    home = h.enroll("A", city="成都")
    h.start_agent(home, env={"HW_SIMULATE": "thermal.fan_stalled,processes.runaway"})
    case = h.help(home, "the fan is silent and something eats the CPU").splitlines()[0]
    alice = h.add_tech("alice")
    h.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case, "--tech",
          "alice", "--scopes", "diagnostics,fix", "--no-fix-approval")
    out = h.tech_json(alice, "diag", case)
    codes = {f["code"] for r in out["result"]["reports"] for f in r["findings"]}
    assert {"thermal.fan_stalled", "processes.runaway"} <= codes
    assert h.tech_json(alice, "case", case)["case"]["state"] == "needs-onsite"
    [ticket] = h.tech_json(alice, "tickets")
    assert ticket["case"] == case and ticket["state"] == "proposed"

    # a real runaway of the customer's: ended, and the end verified
    runaway = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    reaper = threading.Thread(target=runaway.wait, daemon=True)  # or it stays a zombie,
    reaper.start()                                                # which the verify sees
    try:
        fix = h.tech_json(alice, "fix", case, "process.terminate", "--arg",
                          f"pid={runaway.pid}", "--arg", "grace=1")["result"]["fix"]
        reaper.join(30)
        assert runaway.returncode is not None, "the process is gone"
    finally:
        if runaway.poll() is None:
            runaway.kill()
            runaway.wait()
    assert (fix["plan"]["fixer"], fix["applied"], fix["verified"]) == (
        "process.terminate", True, True)

    # the stalled fan and its ticket are still there: the case still waits for the visit
    detail = h.tech_json(alice, "case", case)
    assert detail["case"]["state"] == "needs-onsite"
    assert "resolved" not in [e["state"] for e in detail["history"]]
    assert h.tech_json(alice, "ticket", "show", ticket["ticket"])["state"] == "proposed"
    assert detail["results"][-1]["fix"]["verified"] is True, "the fix itself is stored"
    # (this machine's own readings may add findings, e.g. cpu.overloaded on a busy host)
    server.wait_log(rf"case {case} stays needs-onsite after result \S+: still open: "
                    r"(\S+, )*thermal\.fan_stalled, (\S+, )*ticket open")
