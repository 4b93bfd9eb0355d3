"""Case owners against a real server: a remote technician sees and works on their own cases
and the unassigned queue only; claims, a supervisor's assignments and an owner's transfers
are audited, and so is every read of a customer's data; recordings are readable by the
session's technician, supervisors and auditors (docs/security.md#case-owners)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from conftest import Harness

from proto import messages as m
from proto.roles import Role
from server.config import ServerConfig
from server.store import CaseRecord, Store
from server.tech_gateway import case_info
from tech.client import Profile, TechClient
from tech.errors import TechError

pytestmark = pytest.mark.e2e

ROLES = {"alice": Role.REMOTE, "bob": Role.REMOTE, "sam": Role.SUPERVISOR,
         "aud": Role.AUDITOR, "dana": Role.DESK}


@dataclass
class World:
    h: Harness
    agent_home: Path
    cases: list[str]
    agent_id: str
    techs: dict[str, Path]

    def tech(self, who: str, *args: str, ok: bool = True) -> str:
        p = self.h.run("hw-tech", "--home", str(self.techs[who]), *args, check=False)
        assert "Traceback" not in p.stderr
        assert (p.returncode == 0) is ok, (who, args, p.stdout, p.stderr)
        return p.stdout if ok else p.stderr

    def cases_of(self, who: str, *args: str) -> dict[str, str | None]:
        listed = json.loads(self.tech(who, "cases", "--json", *args))
        return {c["number"]: c.get("owner") for c in listed}

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
    h = Harness(tmp_path_factory.mktemp("owners"))
    try:
        h.init_server()
        h.start_server()
        home = h.enroll("A")
        h.start_agent(home)
        cases = [h.help(home, "laptop gets hot").splitlines()[0],
                 h.help(home, "printer offline").splitlines()[0]]
        assert cases[0] != cases[1]
        techs = {}
        for name, role in ROLES.items():
            techs[name] = h.root / ("T-" + name)
            h.run("hw-server", "tech", "add", "--home", str(h.server_home), name, "--out",
                  str(techs[name]), "--role", role.value)
        db = sqlite3.connect(h.server_home / "store.db")
        (agent_id,) = db.execute("SELECT agent_id FROM agents").fetchone()
        db.close()
        yield World(h, home, cases, agent_id, techs)
    finally:
        h.stop_all()


def test_remote_technicians_see_their_own_cases_and_the_queue(world: World) -> None:
    one, two = world.cases
    assert world.cases_of("bob") == {one: None, two: None}, "all unassigned: all in the queue"
    assert "now owned by alice (was unassigned)" in world.tech("alice", "claim", one)
    assert world.cases_of("alice", "--mine") == {one: "alice"}
    assert world.cases_of("bob") == {two: None}, "bob no longer sees alice's case"
    assert world.cases_of("bob", "--unassigned") == {two: None}
    assert world.cases_of("bob", "--owner", "alice") == {}, "not even when asking for it"
    assert world.cases_of("sam") == {one: "alice", two: None}, "a supervisor sees all"
    assert world.cases_of("aud", "--owner", "alice") == {one: "alice"}
    assert world.cases_of("dana") == {one: "alice", two: None}, "the desk takes calls on all"

    err = world.tech("bob", "case", one, ok=False)
    assert f"case {one} is owned by alice" in err and f"hw-tech assign {one} bob" in err
    assert "owned by alice" in world.tech("bob", "claim", one, ok=False)
    assert "only a supervisor assigns" in world.tech("bob", "assign", one, "bob", ok=False)
    assert "claim_case needs the remote role" in world.tech("aud", "claim", two, ok=False)

    # bob has the customer's grant, yet may not work on alice's case; the agent is not asked
    world.h.grant(world.agent_home, one, "bob")
    assert "owned by alice" in world.tech("bob", "diag", one, ok=False)
    log = world.h.run("hw-agent", "log", "--home", str(world.agent_home)).stdout
    assert "bob ran diagnostics" not in log

    refusals = [(a, s) for a, s, _d in world.audit("tech.refused")]
    assert ("tech:bob", one) in refusals
    claimed = world.audit("case.claimed")
    assert claimed == [("tech:alice", one, {"from": None, "to": "alice"})]


async def test_knowing_the_agent_does_not_let_bob_act_on_alices_case(world: World) -> None:
    """hw-tech reads the case first (refused); a client that knows the agent id and sends
    the signed command straight away is refused too, for every kind of work."""
    one, _two = world.cases
    async with TechClient(Profile.load(world.techs["bob"])) as bob:
        def signed(action: m.Action) -> m.SignedCommand:
            return bob.sign(agent_id=world.agent_id, case=one, action=action)

        for msg in (m.RunDiag(id=bob.new_id(), case=one, command=signed(m.Action.DIAG)),
                    m.RunFix(id=bob.new_id(), case=one, command=signed(m.Action.FIX)),
                    m.ListPlugins(id=bob.new_id(), case=one, command=signed(m.Action.PLUGINS)),
                    m.OpenTunnel(id=bob.new_id(), case=one, command=signed(m.Action.TUNNEL)),
                    m.EscalateCase(id=bob.new_id(), case=one, reason="fan broken")):
            with pytest.raises(TechError, match=f"refused: case {one} is owned by alice"):
                await bob.call(msg)
    log = world.h.run("hw-agent", "log", "--home", str(world.agent_home)).stdout
    assert "bob ran diagnostics" not in log
    assert world.cases_of("sam")[one] == "alice"


def test_the_first_action_claims_an_unassigned_case(world: World) -> None:
    _one, two = world.cases
    assert "no_consent" in world.tech("bob", "diag", two, ok=False)
    assert world.cases_of("sam")[two] is None, "a refused attempt claims nothing"
    world.h.grant(world.agent_home, two, "bob")
    out = json.loads(world.tech("bob", "diag", two, "--probes", "system", "--json"))
    assert out["result"]["ok"] is True
    assert world.cases_of("bob", "--mine") == {two: "bob"}
    assert ("tech:bob", two, {"from": None, "to": "bob"}) in world.audit("case.claimed")
    assert world.cases_of("alice") == {world.cases[0]: "alice"}, "two left alice's queue"


def test_a_supervisor_assigns_and_an_owner_transfers(world: World) -> None:
    one, two = world.cases
    assert "now owned by bob (was alice)" in world.tech("sam", "assign", one, "bob")
    assert "owned by bob" in world.tech("alice", "case", one, ok=False)
    assert json.loads(world.tech("bob", "case", one, "--json"))["case"]["owner"] == "bob"
    assert "now owned by alice (was bob)" in world.tech("bob", "assign", two, "alice")
    assert world.cases_of("bob", "--mine") == {one: "bob"}
    assert "no technician 'nobody'" in world.tech("sam", "assign", one, "nobody", ok=False)
    assert "does not hold the remote role" in world.tech("sam", "assign", one, "dana",
                                                           ok=False)
    transferred = world.audit("case.transferred")
    assert transferred == [("tech:sam", one, {"from": "alice", "to": "bob"}),
                           ("tech:bob", two, {"from": "bob", "to": "alice"})]
    reads = [(a, s) for a, s, _d in world.audit("case.read")]
    assert ("tech:bob", one) in reads, "each read of a case's detail is audited"
    assert ("tech:alice", one) not in reads, "a refused read is not a read"


async def _add_recording(world: World, rec: str, case: str, tech: str) -> None:
    cfg = ServerConfig.load(world.h.server_home)
    store = await Store.open(cfg.db_url)
    try:
        now = datetime.now(UTC)
        data = b'{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "ls\\r\\n"]\n'
        await store.store_recording(recording_id=rec, agent_id=world.agent_id, case=case,
                                    tech=tech, kind="shell", started_at=now, ended_at=now,
                                    data=data, now=now)
        assert hashlib.sha256(data).digest()
    finally:
        await store.close()


async def test_recordings_are_for_the_sessions_technician_supervisors_auditors(
        world: World, tmp_path: Path) -> None:
    one, _two = world.cases  # owned by bob now; alice worked on it before
    await _add_recording(world, "rec-alice", one, "alice")
    await _add_recording(world, "rec-bob", one, "bob")
    out = tmp_path / "rec"
    for who in ("alice", "sam", "aud"):
        world.tech(who, "recording", one, "--id", "rec-alice", "--out", str(out))
        assert out.read_bytes().startswith(b'{"version": 2')
    assert "rec-alice is of alice's session" in world.tech(
        "bob", "recording", one, "--id", "rec-alice", "--out", str(out), ok=False)
    assert "get_recording needs" in world.tech("dana", "recording", one, "--out", str(out),
                                               ok=False)
    shown = json.loads(world.tech("alice", "recording", one, "--json"))["shown"]
    assert shown["id"] == "rec-alice", "the newest of alice's own sessions, not bob's"
    reads = [(a, d["recording"]) for a, _s, d in world.audit("recording.read")]
    assert reads == [("tech:alice", "rec-alice"), ("tech:sam", "rec-alice"),
                     ("tech:aud", "rec-alice"), ("tech:alice", "rec-alice")]


def test_an_older_hw_tech_never_gets_the_owner_field() -> None:
    now = datetime.now(UTC)
    case = CaseRecord(number="HW-20261206-0001", agent_id="ag-1", customer="Li Wei",
                      description="hot", state="open", opened_at=now, updated_at=now,
                      owner="alice")
    assert b'"owner"' not in msgspec.json.encode(case_info(case, version=2))
    assert case_info(case, version=3).owner == "alice"
    assert m.CaseInfo(**{**msgspec.structs.asdict(case_info(case, version=3)),
                         "owner": None}) == case_info(case, version=2)
