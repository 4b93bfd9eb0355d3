"""A rogue enrolled agent against a real server (issue 13, break 2 a and c): it holds a
valid key, so it passes the handshake; what it sends must still not be believed.

- A result that answers no request the server sent to that agent (for that case and
  action) is refused, audited as ``result.refused`` (once per interval), and changes
  nothing: no result, no case move, no on-site ticket.
- A legitimate result still counts after the agent reconnects and the server restarts
  (the record of sent requests is in the store).
- Case quotas per agent (open cases, cases per minute) are refused with a message saying
  which limit and when to retry, audited once per interval.
- Case listings come in pages: every case of every customer is reachable.
"""

from __future__ import annotations

import json
import sqlite3
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect

from proto import messages as m
from proto.session import ClientSession
from tests.harness import Harness

pytestmark = pytest.mark.e2e


class RawAgent:
    """An enrolled agent's own key on a raw ``/agent`` connection: it sends whatever the
    test (the attacker) wants, not what ``hw-agent`` would."""

    def __init__(self, h: Harness, home: Path) -> None:
        self.h = h
        self.agent_id: str = json.loads((home / "agent.json").read_text())["agent_id"]
        key = serialization.load_pem_private_key((home / "agent.key").read_bytes(), None)
        assert isinstance(key, Ed25519PrivateKey)
        self.key = key
        self.ws: ClientConnection | None = None
        self.session = ClientSession(role=m.Role.AGENT, identity=self.agent_id)

    async def connect(self, mode: m.Mode = m.Mode.RUN) -> RawAgent:
        ctx = ssl.create_default_context(cafile=str(self.h.server_home / "ca.crt"))
        self.ws = await connect(f"wss://127.0.0.1:{self.h.port}/agent", ssl=ctx,
                                compression=None, max_size=None)
        self.session = s = ClientSession(role=m.Role.AGENT, identity=self.agent_id)
        await self.ws.send(s.hello(software="rogue", mode=mode), text=True)
        s.receive(await self.ws.recv(decode=False))
        await self.ws.send(s.prove(self.key.sign(s.proof_payload())), text=True)
        s.receive(await self.ws.recv(decode=False))
        return self

    async def send(self, msg: Any) -> None:
        assert self.ws is not None
        await self.ws.send(self.session.send(msg), text=True)

    async def recv(self) -> m.AnyMessage:
        assert self.ws is not None
        while True:
            msg = self.session.receive(await self.ws.recv(decode=False))
            if not isinstance(msg, m.Revocations | m.SignedRevocations):  # after every welcome
                return msg

    async def ask(self, msg: Any) -> m.AnyMessage:
        await self.send(msg)
        return await self.recv()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def hardware_fault(case: str, re: str, msg_id: str = "rs-forged") -> m.Result:
    """The forged result of issue 13: a critical hardware finding no fixer can address (it
    would move the case to needs-onsite and propose an on-site ticket with a quote)."""
    finding = m.Finding(code="thermal.fan_stalled", severity=m.Severity.CRITICAL,
                        category=m.Category.HARDWARE, summary="Fan cpu_fan stands still",
                        evidence={"fan": "cpu_fan", "rpm": 0})
    return m.Result(id=msg_id, re=re, case=case, action=m.Action.DIAG, ok=True,
                    reports=[m.ProbeReport(probe="thermal", version="1",
                                           status=m.ProbeStatus.OK, findings=[finding])])


def db_rows(h: Harness, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(h.server_home / "store.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def audit(h: Harness, event: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [(actor, subject, json.loads(detail)) for actor, subject, detail in db_rows(
        h, "SELECT actor, subject, detail FROM audit WHERE event = ? ORDER BY id", event)]


def case_detail(h: Harness, tech: Path, case: str) -> Any:
    return h.tech_json(tech, "case", case)


def tickets_of(h: Harness, case: str) -> int:
    return int(db_rows(h, "SELECT count(*) FROM tickets WHERE case_number = ?", case)[0][0])


@pytest.fixture
def server(harness: Harness) -> Harness:
    harness.init_server(agent_open_cases=100, agent_cases_per_minute=100)
    harness.start_server()
    return harness


async def test_a_result_answering_no_request_is_refused_audited_and_changes_nothing(
        server: Harness) -> None:
    h = server
    home = h.enroll("ROGUE", customer="Mallory")
    case = h.help(home)
    tech = h.add_tech("alice")
    rogue = await RawAgent(h, home).connect()
    try:
        reply = await rogue.ask(hardware_fault(case, re="rq-00000000deadbeef"))
        assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
        assert reply.re == "rs-forged"
        assert "sent this agent no request" in reply.message
        assert "not stored" in reply.message
        # A flood of them is refused one by one and audited once.
        for i in range(5):
            again = await rogue.ask(hardware_fault(case, re=f"rq-{i:016x}", msg_id=f"rs-{i}"))
            assert isinstance(again, m.Error) and again.code is m.ErrorCode.REFUSED
    finally:
        await rogue.close()
    detail = case_detail(h, tech, case)
    assert detail["case"]["state"] == "open"
    assert detail["results"] == []
    assert tickets_of(h, case) == 0
    refused = audit(h, "result.refused")
    assert len(refused) == 1
    actor, subject, what = refused[0]
    assert (actor, subject) == (f"agent:{rogue.agent_id}", case)
    assert what["reason"] == "unrequested" and what["result"] == "rs-forged"
    assert what["refusals"] == 1 and what["request"] == "rq-00000000deadbeef"


async def test_a_result_for_another_agents_request_or_action_is_refused(
        server: Harness) -> None:
    """A real request id does not help: it must have been sent to this agent, for this case
    and this action."""
    h = server
    victim_home = h.enroll("VICTIM", customer="Li Wei")
    victim_case = h.help(victim_home)
    rogue_home = h.enroll("ROGUE", customer="Mallory")
    rogue_case = h.help(rogue_home)
    tech = h.add_tech("alice")
    victim = await RawAgent(h, victim_home).connect()
    diag = h.spawn("diag", "hw-tech", "--home", str(tech), "diag", victim_case,
                   "--timeout", "20")
    try:
        request = await victim.recv()
        assert isinstance(request, m.Request) and request.case == victim_case
        rogue = await RawAgent(h, rogue_home).connect(m.Mode.CALL)
        try:
            stolen = await rogue.ask(hardware_fault(rogue_case, re=request.id))
            assert isinstance(stolen, m.Error) and "no request" in stolen.message
        finally:
            await rogue.close()
        wrong = await victim.ask(msgspec_replace(hardware_fault(victim_case, re=request.id),
                                                 action=m.Action.PLUGINS))
        assert isinstance(wrong, m.Error) and "another action" in wrong.message
        ok = await victim.ask(m.Result(id="rs-real", re=request.id, case=victim_case,
                                       action=m.Action.DIAG, ok=True))
        assert ok == m.Ack(re="rs-real")
        twice = await victim.ask(m.Result(id="rs-second", re=request.id, case=victim_case,
                                          action=m.Action.DIAG, ok=True))
        assert isinstance(twice, m.Error) and "already answered" in twice.message
    finally:
        await victim.close()
        diag.stop()
    assert tickets_of(h, rogue_case) == 0
    assert case_detail(h, tech, rogue_case)["case"]["state"] == "open"
    assert [r["msg_id"] for r in case_detail(h, tech, victim_case)["results"]] == ["rs-real"]
    reasons = sorted(d["reason"] for _a, _s, d in audit(h, "result.refused"))
    assert reasons == ["answered", "unrequested", "wrong_action"]


def msgspec_replace(result: m.Result, **changes: Any) -> m.Result:
    import msgspec

    return msgspec.structs.replace(result, **changes)


async def test_a_legit_result_counts_after_a_reconnect_and_a_server_restart(
        server: Harness) -> None:
    """The agent got a request, lost its connection before answering and the server
    restarted; its outbox resends the result on the new connection: stored, the case moves
    (a hardware fault: needs-onsite and a proposed ticket), resends are duplicates."""
    h = server
    home = h.enroll("B", customer="Li Wei")
    case = h.help(home)
    tech = h.add_tech("alice")
    agent = await RawAgent(h, home).connect()
    diag = h.spawn("diag", "hw-tech", "--home", str(tech), "diag", case, "--timeout", "20")
    request = await agent.recv()
    assert isinstance(request, m.Request) and request.action is m.Action.DIAG
    await agent.close()  # gone before answering
    assert diag.popen.wait(60) == 1  # "went offline during the request"
    h.procs[0].stop()
    h.procs.remove(h.procs[0])
    h.start_server()
    agent = await RawAgent(h, home).connect()
    try:
        result = hardware_fault(case, re=request.id, msg_id="rs-outbox")
        assert await agent.ask(result) == m.Ack(re="rs-outbox")
        assert await agent.ask(result) == m.Ack(re="rs-outbox")  # a resend: acked again
    finally:
        await agent.close()
    detail = case_detail(h, tech, case)
    assert detail["case"]["state"] == "needs-onsite"
    assert [r["msg_id"] for r in detail["results"]] == ["rs-outbox"]
    assert tickets_of(h, case) == 1
    assert audit(h, "result.refused") == []
    assert db_rows(h, "SELECT agent_id, case_number, action, answered_by FROM requests "
                      "WHERE request_id = ?", request.id) == [
        (agent.agent_id, case, "diag", "rs-outbox")]


# ----------------------------------------------------------------------- quotas


async def test_open_cases_quota_refuses_with_the_limit_and_audits_once(
        harness: Harness) -> None:
    h = harness
    h.init_server(agent_open_cases=2, agent_cases_per_minute=100)
    h.start_server()
    home = h.enroll("Q", customer="Mallory")
    h.help(home)
    h.help(home)
    out = h.run("hw-agent", "--home", str(home), "help", "one more", check=False)
    assert out.returncode != 0
    assert "the limit is 2 per computer" in out.stderr
    assert "retry once HelloWord support has taken one of them up" in out.stderr
    rogue = await RawAgent(h, home).connect(m.Mode.CALL)
    try:
        for i in range(20):
            reply = await rogue.ask(m.OpenCase(id=f"oc-{i}", description="flood"))
            assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
            assert "limit is 2" in reply.message
    finally:
        await rogue.close()
    assert db_rows(h, "SELECT count(*) FROM cases WHERE agent_id = ?",
                   rogue.agent_id) == [(2,)]
    refused = audit(h, "quota.refused")
    assert len(refused) == 1
    assert refused[0][0] == f"agent:{rogue.agent_id}"
    assert refused[0][2]["limit"] == "open_cases" and refused[0][2]["allowed"] == 2


async def test_case_rate_quota_says_when_to_retry(harness: Harness) -> None:
    h = harness
    h.init_server(agent_open_cases=100, agent_cases_per_minute=3)
    h.start_server()
    home = h.enroll("Q", customer="Mallory")
    rogue = await RawAgent(h, home).connect(m.Mode.CALL)
    try:
        for i in range(3):
            assert isinstance(await rogue.ask(m.OpenCase(id=f"oc-{i}", description="x")),
                              m.CaseOpened)
        for i in range(3, 10):
            reply = await rogue.ask(m.OpenCase(id=f"oc-{i}", description="x"))
            assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
            assert "opened 3 cases in the last minute (the limit is 3 per minute); " \
                   "retry in " in reply.message
    finally:
        await rogue.close()
    assert len(audit(h, "quota.refused")) == 1


async def test_an_oversized_result_is_refused_and_the_technician_told(
        harness: Harness) -> None:
    h = harness
    h.init_server(result_max_bytes=2048)
    h.start_server()
    home = h.enroll("BIG", customer="Li Wei")
    case = h.help(home)
    tech = h.add_tech("alice")
    agent = await RawAgent(h, home).connect()
    diag = h.spawn("diag", "hw-tech", "--home", str(tech), "diag", case, "--timeout", "20")
    try:
        request = await agent.recv()
        assert isinstance(request, m.Request)
        big = m.Result(id="rs-big", re=request.id, case=case, action=m.Action.DIAG, ok=True,
                       reports=[m.ProbeReport(probe="p", version="1", status=m.ProbeStatus.OK,
                                              readings={"junk": "x" * 4000})])
        reply = await agent.ask(big)
        assert isinstance(reply, m.Error) and reply.code is m.ErrorCode.REFUSED
        assert "over the server's limit of 2048 bytes per result" in reply.message
        diag.popen.wait(60)  # a failed diagnosis, shown as such (hw-tech diag exits 0)
    finally:
        await agent.close()
        diag.stop()
    assert "failed: the server refused the agent's result: result rs-big is" in diag.text()
    assert "over the server's limit of 2048 bytes" in diag.text()
    assert case_detail(h, tech, case)["results"] == []
    assert [d["limit"] for _a, _s, d in audit(h, "quota.refused")] == ["result_bytes"]


# ----------------------------------------------------------------------- case pages


async def test_case_pages_show_every_case_of_every_customer(server: Harness) -> None:
    h = server
    tech = h.add_tech("alice")
    opened: dict[str, list[str]] = {}
    for name, customer, n in (("L", "Li Wei", 7), ("W", "Wang Fang", 5)):
        agent = await RawAgent(h, h.enroll(name, customer=customer)).connect(m.Mode.CALL)
        try:
            for i in range(n):
                reply = await agent.ask(m.OpenCase(id=f"oc-{i}", description=f"{name}{i}"))
                assert isinstance(reply, m.CaseOpened)
                opened.setdefault(customer, []).append(reply.case)
        finally:
            await agent.close()
    every = sorted(opened["Li Wei"] + opened["Wang Fang"])

    def page(*args: str) -> tuple[list[str], str]:
        out = h.run("hw-tech", "--home", str(tech), "cases", *args, "--json")
        return [c["number"] for c in json.loads(out.stdout)], out.stderr

    first, note = page("--limit", "5")
    assert len(first) == 5 and "--offset 5" in note
    second, note = page("--limit", "5", "--offset", "5")
    assert len(second) == 5 and "--offset 10" in note
    last, note = page("--limit", "5", "--offset", "10")
    assert len(last) == 2 and note == ""
    assert sorted(first + second + last) == every
    assert sorted(page("--all", "--limit", "5")[0]) == every
    assert sorted(page("--customer", "Wang Fang", "--all", "--limit", "2")[0]) == sorted(
        opened["Wang Fang"])
    assert page("--customer", "Nobody")[0] == []
    assert page("--state", "resolved", "--all")[0] == []
    table = h.run("hw-tech", "--home", str(tech), "cases", "--limit", "3").stdout
    assert table.count("HW-") == 3


@pytest.mark.parametrize("args", [
    ["--limit", "0"], ["--limit", "501"], ["--limit", "x"], ["--offset", "-1"],
    ["--offset", "9" * 5000], ["--offset", "5", "--all"], ["--customer", ""],
    ["--customer", "c" * 129], ["--customer", "bad\x1b[2J"],
])
def test_bad_case_listing_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    h = Harness(tmp_path)
    out = h.run("hw-tech", "--home", str(tmp_path), "cases", *args, check=False)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "error:" in out.stderr


async def test_a_version_2_technician_is_never_shown_a_cut_list(harness: Harness) -> None:
    """Pages are version 3: a version-2 hw-tech gets every case while they fit one page,
    and beyond that an error saying to upgrade (before: the newest 500, silently)."""
    from tech.client import Profile, TechClient

    h = harness
    h.init_server(agent_open_cases=1000, agent_cases_per_minute=1000)
    h.start_server()
    tech = h.add_tech("alice")
    agent = await RawAgent(h, h.enroll("MANY", customer="Mallory")).connect(m.Mode.CALL)

    async def list_as_v2() -> m.AnyMessage:
        client = TechClient(Profile.load(tech))
        client.session = ClientSession(role=m.Role.TECH, identity=client.profile.name,
                                       versions=(1, 2))
        async with client:
            assert client.session.version == 2
            await client.ws.send(client.session.send(m.ListCases(id="tq-1")),  # type: ignore[union-attr]
                                 text=True)
            return client.session.receive(await client.ws.recv(decode=False))  # type: ignore[union-attr]

    try:
        for i in range(m.CASE_PAGE + 1):
            reply = await agent.ask(m.OpenCase(id=f"oc-{i}", description="x"))
            assert isinstance(reply, m.CaseOpened)
            if i == m.CASE_PAGE - 1:
                fits = await list_as_v2()
                assert isinstance(fits, m.CaseList) and len(fits.cases) == m.CASE_PAGE
                assert fits.next_offset is None
    finally:
        await agent.close()
    cut = await list_as_v2()
    assert isinstance(cut, m.Error) and cut.code is m.ErrorCode.BAD_REQUEST
    assert "cannot page through them; upgrade hw-tech" in cut.message
    every = h.tech_json(tech, "cases", "--all")
    assert len({c["number"] for c in every}) == m.CASE_PAGE + 1
