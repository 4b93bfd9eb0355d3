"""Tickets, agents and recordings against a real server, per role and case owner: a remote
technician sees the tickets and the agents of the cases they may read (their own and the
unassigned queue), not every customer's; every ticket read is audited; a field technician's
own visits are found however many newer tickets there are; a recording refused to an older
hw-tech is not audited as read (docs/security.md#roles, #case-owners)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Harness

from proto import messages as m
from proto.session import ClientSession
from server.config import ServerConfig
from server.store import Store
from tech.client import Profile, TechClient
from tech.errors import TechError

pytestmark = pytest.mark.e2e

CHINA = ZoneInfo("Asia/Shanghai")
ROLES = {"alice": "remote", "bob": "remote", "sam": "supervisor", "aud": "auditor",
         "dana": "desk", "finn": "field"}


@dataclass
class World:
    h: Harness
    techs: dict[str, Path]
    agents: dict[str, str]
    """Agent id by home name: A (Li Wei, case owned by alice), B (Zhao Min, unassigned
    case), C (Qian Bo, no case)."""
    cases: dict[str, str]
    tickets: dict[str, str]
    """Ticket by agent home name: A's is booked for finn."""

    def tech(self, who: str, *args: str, ok: bool = True) -> str:
        p = self.h.run("hw-tech", "--home", str(self.techs[who]), *args, check=False)
        assert "Traceback" not in p.stderr
        assert (p.returncode == 0) is ok, (who, args, p.stdout, p.stderr)
        return p.stdout if ok else p.stderr

    def tickets_of(self, who: str) -> set[str]:
        return {t["ticket"] for t in json.loads(self.tech(who, "tickets", "--json"))}

    def agents_of(self, who: str, *args: str) -> set[str]:
        return {a["agent_id"] for a in json.loads(self.tech(who, "agents", "--json", *args))}

    def audit(self, event: str) -> list[tuple[str, str, dict[str, object]]]:
        db = sqlite3.connect(self.h.server_home / "store.db")
        try:
            rows = db.execute("SELECT actor, subject, detail FROM audit WHERE event = ? "
                              "ORDER BY id", (event,)).fetchall()
        finally:
            db.close()
        return [(a, s, json.loads(d)) for a, s, d in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    h = Harness(tmp_path_factory.mktemp("ticketaccess"))
    try:
        h.init_server()
        h.run("hw-server", "field-tech", "add", "--home", str(h.server_home), "finn",
              "--base", "上海", "--skills", "hardware-repair", "--capacity", "2")
        h.start_server()
        # enterprise customers: eligible for a hardware repair visit without a remote attempt
        homes = {"A": h.enroll("A", kind="enterprise"),
                 "B": h.enroll("B", customer="Zhao Min", kind="enterprise"),
                 "C": h.enroll("C", customer="Qian Bo")}
        for name in ("A", "B"):
            h.start_agent(homes[name])
        cases = {"A": h.help(homes["A"], "the fan is silent").splitlines()[0],
                 "B": h.help(homes["B"], "keyboard dead").splitlines()[0]}
        techs = {name: h.add_tech(name, (role,)) for name, role in ROLES.items()}
        db = sqlite3.connect(h.server_home / "store.db")
        agents = {name: db.execute("SELECT agents.agent_id FROM agents JOIN customers ON "
                                   "customers.id = agents.customer_id WHERE customers.name = ?",
                                   (customer,)).fetchone()[0]
                  for name, customer in (("A", "Li Wei"), ("B", "Zhao Min"),
                                         ("C", "Qian Bo"))}
        db.close()
        world = World(h, techs, agents, cases, {})
        for name, case in cases.items():
            t = json.loads(world.tech("dana", "escalate", case, "--reason",
                                      f"needs a visit ({name})", "--json"))
            world.tickets[name] = t["ticket"]
        assert "now owned by alice" in world.tech("alice", "claim", cases["A"])
        world.tech("dana", "book", world.tickets["A"], "--slot",
                   datetime.fromisoformat(t_slot(world, world.tickets["A"]))
                   .astimezone(CHINA).strftime("%Y-%m-%dT%H:%M"),
                   "--accepted-by", "phone")
        booked = json.loads(world.tech("dana", "ticket", "show", world.tickets["A"], "--json"))
        assert booked["state"] == "booked" and booked["technician"] == "finn"
        yield world
    finally:
        h.stop_all()


def t_slot(world: World, ticket: str) -> str:
    t = json.loads(world.tech("dana", "ticket", "show", ticket, "--json"))
    assert t["slots"], t
    return str(t["slots"][0]["start"])


def test_a_remote_technician_sees_tickets_of_cases_they_may_read_only(world: World) -> None:
    ta, tb = world.tickets["A"], world.tickets["B"]
    assert world.tickets_of("bob") == {tb}, "alice's case's ticket is not bob's to see"
    assert world.tickets_of("alice") == {ta, tb}, "her own case and the unassigned queue"
    for who in ("sam", "aud", "dana"):
        assert world.tickets_of(who) == {ta, tb}, who
    assert world.tickets_of("finn") == {ta}, "the field technician: the visit booked for him"
    assert "Li Wei" not in world.tech("bob", "tickets")

    err = world.tech("bob", "ticket", "show", ta, ok=False)
    assert f"case {world.cases['A']} is owned by alice" in err and "Li Wei" not in err
    assert "not booked for finn" in world.tech("finn", "ticket", "show", tb, ok=False)
    shown = json.loads(world.tech("alice", "ticket", "show", ta, "--json"))
    assert shown["ticket"] == ta and shown["customer"] == "Li Wei"
    assert json.loads(world.tech("bob", "ticket", "show", tb, "--json"))["ticket"] == tb
    assert json.loads(world.tech("finn", "ticket", "show", ta, "--json"))["ticket"] == ta

    reads = [(a, s) for a, s, _d in world.audit("ticket.read")]
    assert ("tech:alice", ta) in reads and ("tech:bob", tb) in reads
    assert ("tech:finn", ta) in reads, "every read of a ticket is audited"
    assert ("tech:bob", ta) not in reads and ("tech:finn", tb) not in reads, \
        "a refused read is not a read"
    detail = next(d for a, s, d in world.audit("ticket.read") if a == "tech:alice")
    assert detail["case"] == world.cases["A"] and str(detail["key"]).startswith("SHA256:")
    refused = [(a, s) for a, s, _d in world.audit("tech.refused")]
    assert ("tech:bob", ta) in refused and ("tech:finn", tb) in refused


def test_a_remote_technician_with_the_field_role_updates_only_their_visits(
        world: World) -> None:
    """Seeing a ticket of the unassigned queue lets a remote technician read it, not move
    it: only the desk, a supervisor or the visit's field technician do."""
    home = world.h.add_tech("rafa", ("remote", "field"))
    world.techs["rafa"] = home
    tb = world.tickets["B"]
    assert tb in world.tickets_of("rafa")
    err = world.tech("rafa", "ticket", "cancel", tb, "--note", "moved away", ok=False)
    assert f"ticket {tb} is not booked for rafa" in err
    state = json.loads(world.tech("sam", "ticket", "show", tb, "--json"))["state"]
    assert state == "proposed", "nothing changed"


def test_a_remote_technician_lists_the_agents_of_cases_they_may_read_only(
        world: World) -> None:
    a, b, c = world.agents["A"], world.agents["B"], world.agents["C"]
    assert world.agents_of("bob") == {b}, "A's case is alice's; C has no case"
    assert world.agents_of("bob", "--customer", "Li Wei") == set()
    assert "Li Wei" not in world.tech("bob", "agents") and "Qian Bo" not in world.tech(
        "bob", "agents")
    assert world.agents_of("alice") == {a, b}
    assert world.agents_of("alice", "--online") == {a, b}
    for who in ("sam", "aud", "dana"):
        assert world.agents_of(who) == {a, b, c}, who
    assert world.agents_of("sam", "--customer", "Li Wei") == {a}


def test_a_remote_technicians_fanout_still_reaches_every_online_agent(world: World) -> None:
    """The fan-out goes to the agents connected, not to the technician's listing."""
    out = json.loads(world.tech("bob", "ping", "--all", "--json"))
    assert (out["sent"], out["ok"]) == (2, 2), out


def test_a_field_technicians_visit_is_not_hidden_behind_newer_tickets(world: World) -> None:
    """600 newer unbooked tickets of alice's case: finn still finds his visit, and bob the
    ticket of the unassigned case; the listing is filtered in the store's query, before its
    limit of 500, not after it."""
    ta, tb = world.tickets["A"], world.tickets["B"]
    db = sqlite3.connect(world.h.server_home / "store.db", timeout=30)
    try:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM tickets WHERE ticket_id = ?", (ta,)).fetchone())
        later = datetime.now(UTC) + timedelta(minutes=1)
        clones = []
        for i in range(600):
            clone = dict(row, ticket_id=f"TK-20991231-{i:04d}", technician=None,
                         booked_start=None, booked_end=None, state="cancelled",
                         created_at=(later + timedelta(seconds=i)).strftime(
                             "%Y-%m-%d %H:%M:%S.%f"))
            clones.append(clone)
        columns = list(row)
        db.executemany(f"INSERT INTO tickets ({', '.join(columns)}) VALUES "
                       f"({', '.join('?' for _ in columns)})",
                       [[c[k] for k in columns] for c in clones])
        db.commit()
    finally:
        db.close()
    assert world.tickets_of("finn") == {ta}
    assert world.tickets_of("bob") == {tb}
    assert len(world.tickets_of("alice")) == 500, "newest first, at most 500"


async def _sealed_recording(world: World, rec: str) -> None:
    store = await Store.open(ServerConfig.load(world.h.server_home).db_url)
    try:
        now = datetime.now(UTC)
        await store.store_recording(recording_id=rec, agent_id=world.agents["B"],
                                    case=world.cases["B"], tech="bob", kind="shell",
                                    started_at=now, ended_at=now, data=b"sealed-bytes",
                                    now=now, sealed=True, size=42, sha256=b"\x00" * 32)
    finally:
        await store.close()


async def test_a_recording_an_older_hw_tech_cannot_open_is_not_audited_as_read(
        world: World) -> None:
    await _sealed_recording(world, "rec-sealed")
    case = world.cases["B"]
    old = TechClient(Profile.load(world.techs["sam"]))
    old.session = ClientSession(role=m.Role.TECH, identity="sam", versions=(1, 2))
    async with old:
        assert old.session.version == 2
        with pytest.raises(TechError, match=r"sealed at rest.*upgrade hw-tech"):
            await old.call(m.GetRecording(id=old.new_id(), case=case, recording="rec-sealed"))
    assert [d["recording"] for _a, _s, d in world.audit("recording.read")] == [], \
        "no data left the server: nothing was read"
    async with TechClient(Profile.load(world.techs["sam"])) as new:
        got = await new.call(m.GetRecording(id=new.new_id(), case=case,
                                            recording="rec-sealed"))
        assert isinstance(got, m.RecordingData) and got.data == b"sealed-bytes"
    assert [(a, d["recording"]) for a, _s, d in world.audit("recording.read")] == [
        ("tech:sam", "rec-sealed")]
