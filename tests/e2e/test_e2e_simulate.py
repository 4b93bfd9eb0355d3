"""Simulated hardware faults drive the real probes, findings and case states end to end."""

from __future__ import annotations

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.e2e


def test_simulated_fan_failure_sends_the_case_on_site(harness: Harness) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home, env={"HW_SIMULATE": "thermal.fan_stalled,disk.almost_full"})
    case = h.help(home, "the fan is silent and the laptop is hot").splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice")
    out = h.tech_json(alice, "diag", case)
    findings = {f["code"]: f for r in out["result"]["reports"] for f in r["findings"]}
    stalled = findings["thermal.fan_stalled"]
    assert stalled["category"] == "hardware" and stalled["remote_fixable"] is False
    assert stalled["evidence"]["simulated"] is True
    assert findings["disk.almost_full"]["fixers"] == ["disk.cleanup"]
    detail = h.tech_json(alice, "case", case)
    assert detail["case"]["state"] == "needs-onsite"


def test_fixable_simulated_fault_alone_does_not_send_anyone(harness: Harness) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home, env={"HW_SIMULATE": "disk.almost_full"})
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice")
    h.tech_json(alice, "diag", case)
    assert h.tech_json(alice, "case", case)["case"]["state"] == "diagnosed"
