"""The whole on-site lifecycle with real processes: a simulated stalled fan, automatic
escalation, an offer shown through the agent, the customer's signed acceptance, dispatch,
the visit, sign-off, the customer's signed confirmation, the follow-up call, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.e2e


def agent_json(h: Harness, home: Path, *args: str) -> object:
    return json.loads(h.run("hw-agent", "--home", str(home), *args, "--json").stdout)


def test_fan_stalled_case_goes_on_site_and_is_confirmed_and_followed_up(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.init_server()
    s = str(h.server_home)
    h.run("hw-server", "field-tech", "add", "--home", s, "wang", "--base", "成都",
          "--skills", "hardware-repair,network-setup", "--capacity", "2")
    h.start_server()
    home = h.enroll("A", city="成都")
    agent = h.start_agent(home, env={"HW_SIMULATE": "thermal.fan_stalled"})
    case = h.help(home, "the fan is silent and the laptop shuts down").splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice", scopes="diagnostics")
    h.tech_json(alice, "diag", case)
    assert h.tech_json(alice, "case", case)["case"]["state"] == "needs-onsite"

    # escalated automatically, once
    tickets = h.tech_json(alice, "tickets")
    assert len(tickets) == 1 and tickets[0]["case"] == case
    ticket = tickets[0]["ticket"]
    t = h.tech_json(alice, "ticket", "show", ticket)
    assert t["state"] == "proposed" and t["eligible"] and len(t["slots"]) == 3
    assert t["findings"][0]["code"] == "thermal.fan_stalled"  # hardware first, then the rest
    assert any("fan assembly" in p for p in t["preparation"]) and t["checklist"]
    again = h.tech_json(alice, "escalate", case, "--reason", "by hand")
    assert again["ticket"] == ticket  # one open ticket per case

    # the offer needs the customer's book-visit consent
    refused = h.run("hw-tech", "--home", str(alice), "book", ticket, check=False)
    assert refused.returncode == 1 and "book-visit" in refused.stderr
    assert not (home / "visits").exists()
    h.grant(home, case, "alice", scopes="diagnostics,book-visit")
    h.run("hw-tech", "--home", str(alice), "book", ticket)
    agent.wait_log(rf"on-site offer {ticket}")
    shown = h.run("hw-agent", "--home", str(home), "visit", "show", ticket).stdout
    assert "accept with: hw-agent visit accept" in shown and "1." in shown

    # nothing is booked until the customer accepts (signed); a bad slot number changes nothing
    bad = h.run("hw-agent", "--home", str(home), "visit", "accept", ticket, "--slot", "7",
                check=False)
    assert bad.returncode == 2 and "7 is more than 3" in bad.stderr
    assert h.tech_json(alice, "ticket", "show", ticket)["state"] == "proposed"
    booked = agent_json(h, home, "visit", "accept", ticket, "--slot", "2")
    assert isinstance(booked, dict)
    assert booked["state"] == "booked" and booked["technician"] == "wang"
    assert booked["booked_start"] is not None and booked["total"] == t["slots"][1]["total"]
    ics = tmp_path / "visit.ics"
    h.run("hw-agent", "--home", str(home), "visit", "show", ticket, "--ics", str(ics))
    assert "BEGIN:VEVENT" in ics.read_text() and ticket in ics.read_text()

    # the visit: prepared, on site, sign-off (unresolved, customer's device: base fee only)
    skip = h.run("hw-tech", "--home", str(alice), "ticket", "arrive", ticket, check=False)
    assert skip.returncode == 1 and "prepared" in skip.stderr
    h.tech_json(alice, "ticket", "prepare", ticket)
    h.tech_json(alice, "ticket", "arrive", ticket)
    off = h.tech_json(alice, "ticket", "signoff", ticket, "--resolved", "no", "--root-cause",
                      "customer-device", "--note", "mainboard fan header burnt")
    assert off["fee"] == min(400, t["slots"][1]["total"]) and off["resolved"] is False
    # signed off: it still is `on-site`, and reads as waiting for the customer's signature
    assert off["state"] == "on-site" and off["confirmed"] is False
    listed = h.run("hw-tech", "--home", str(alice), "tickets").stdout
    assert "on-site (signed off: awaiting the customer's signed confirmation)" in listed
    waiting = h.run("hw-agent", "--home", str(home), "visit", "show", ticket).stdout
    assert "waiting for your signed confirmation" in waiting
    assert "+08:00" in waiting  # the booked slot in the customer's zone, offset shown

    # the customer signs the confirmation on the agent; the operator verifies it later
    early = h.run("hw-server", "ticket", "verify", "--home", s, ticket, check=False)
    assert early.returncode == 1 and "no signed confirmation" in early.stderr
    confirmed = agent_json(h, home, "visit", "confirm", ticket, "--yes")
    assert isinstance(confirmed, dict) and confirmed["state"] == "confirmed"
    verified = h.run("hw-server", "ticket", "verify", "--home", s, ticket)
    assert "valid" in verified.stdout and "customer-device" in verified.stdout

    # follow-up: not resolved -> the case is reopened, first-time fix fails
    due = h.tech_json(alice, "tickets", "--followup-due")
    assert due == []  # due two working days later, not today
    h.tech_json(alice, "ticket", "followup", ticket, "--resolved", "no", "--satisfaction",
                "3")
    assert h.tech_json(alice, "case", case)["case"]["state"] == "reopened"
    closed = h.tech_json(alice, "ticket", "close", ticket)
    assert [e["state"] for e in closed["history"]] == [
        "proposed", "booked", "prepared", "on-site", "on-site", "confirmed", "followed-up",
        "closed"]
    report = json.loads(h.run("hw-server", "report", "--home", s, "--json").stdout)
    assert report["visits"] == 1 and report["first_time_fix_rate"] == 0.0
    assert report["revenue"] == off["fee"] and report["visits_by_tier"] == {"new-1": 1}
    text = h.run("hw-server", "report", "--home", s).stdout
    assert "mean satisfaction: 3.00/5 (follow-up calls: 1)" in text
    audit = h.run("hw-server", "audit", "show", "--home", s, "--subject", ticket,
                  env={"TZ": "Asia/Shanghai"}).stdout
    assert " +08:00 " in audit and "AT (UTC)" not in audit  # local time, offset shown
    for event in ("ticket.proposed", "ticket.booked", "ticket.signed-off", "ticket.confirmed",
                  "ticket.followed-up", "ticket.closed"):
        assert event in audit
    log = h.run("hw-agent", "--home", str(home), "log").stdout
    assert "offer" in log and "visit-accept" in log and "visit-confirm" in log


def test_phone_acceptance_and_an_uncovered_customer(harness: Harness) -> None:
    h = harness
    h.init_server()
    s = str(h.server_home)
    h.run("hw-server", "field-tech", "add", "--home", s, "li", "--base", "上海", "--skills",
          "hardware-repair")
    h.start_server()
    alice = h.add_tech("alice")
    far = h.enroll("F", city="拉萨")
    h.start_agent(far, env={"HW_SIMULATE": "thermal.fan_stalled"})
    case = h.help(far).splitlines()[0]
    h.grant(far, case, "alice")
    h.tech_json(alice, "diag", case)
    t = h.tech_json(alice, "tickets")[0]
    assert t["state"] == "not-eligible" and t["alternatives"]
    near = h.enroll("N", city="上海")
    h.start_agent(near, env={"HW_SIMULATE": "thermal.fan_stalled"})
    case2 = h.help(near).splitlines()[0]
    h.grant(near, case2, "alice")
    h.tech_json(alice, "diag", case2)
    t2 = next(x for x in h.tech_json(alice, "tickets") if x["case"] == case2)
    missing = h.run("hw-tech", "--home", str(alice), "book", t2["ticket"], "--slot",
                    t2["slots"][0]["start"], check=False)
    assert missing.returncode == 1 and "--accepted-by" in missing.stderr
    booked = h.tech_json(alice, "book", t2["ticket"], "--slot", t2["slots"][0]["start"],
                         "--accepted-by", "phone")
    assert booked["state"] == "booked" and "phone" in booked["accepted_by"]
    assert "alice" in booked["accepted_by"]


def test_in_readme_order_a_field_technician_added_after_escalation_gets_slots(
        harness: Harness) -> None:
    """Issue 12, bug 4: escalation before any field technician exists; escalate, book and
    field-tech add propose again from the technicians on record."""
    h = harness
    h.init_server()
    s = str(h.server_home)
    h.start_server()
    home = h.enroll("A", city="上海")
    h.start_agent(home, env={"HW_SIMULATE": "thermal.fan_stalled"})
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice", scopes="diagnostics,book-visit")
    h.tech_json(alice, "diag", case)
    ticket = h.tech_json(alice, "tickets")[0]
    assert ticket["state"] == "proposed" and ticket["slots"] == []
    listed = h.run("hw-tech", "--home", str(alice), "tickets").stdout
    assert "proposed (no slots yet)" in listed
    again = h.run("hw-tech", "--home", str(alice), "escalate", case, "--reason", "by hand")
    assert again.returncode == 0 and "has no slot to offer" in again.stderr
    assert "no field technician" in again.stderr
    book = h.run("hw-tech", "--home", str(alice), "book", ticket["ticket"], check=False)
    assert book.returncode == 1 and "has no slot to offer" in book.stderr
    shown = h.tech_json(alice, "ticket", "show", ticket["ticket"])
    notes = [e["note"] for e in shown["history"]]
    assert any("before offering" in n and "no slot to propose" in n
               for n in notes), notes  # book proposed again before giving up

    added = h.run("hw-server", "field-tech", "add", "--home", s, "wang", "--base", "上海",
                  "--skills", "hardware-repair").stdout
    assert f"ticket {ticket['ticket']}" in added and "3 proposed now" in added
    now = h.tech_json(alice, "tickets")[0]
    assert len(now["slots"]) == 3 and now["total"] == now["slots"][0]["total"]
    assert not any("no field technician" in r for r in now["reasons"])
    h.run("hw-tech", "--home", str(alice), "book", ticket["ticket"])  # offered: 3 slots
