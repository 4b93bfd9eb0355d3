"""Roles against a real server: every role x every technician request, with certificates
from `hw-server tech add --role`; and the agent refusing a desk certificate's diag even when
the customer granted it and the server forwarded it (docs/security.md#roles)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sqlite3
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Harness
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.asyncio.server import ServerConnection, serve

from agent.client import Agent
from agent.consent import Policy
from agent.home import AgentHome
from plugins import get_plugin_manager
from proto import messages as m
from proto.roles import Role
from proto.session import ServerSession
from server.revocations import SIGNED_FILE
from tech.client import Profile, TechClient
from tech.errors import TechError

pytestmark = pytest.mark.e2e

NAMES = {Role.REMOTE: "rita", Role.DESK: "dana", Role.FIELD: "finn", Role.SUPERVISOR: "sam",
         Role.AUDITOR: "aud"}
#: The server's side of the matrix (tests/proto/test_roles_matrix.py has the whole table).
R, D, F, S, A = Role.REMOTE, Role.DESK, Role.FIELD, Role.SUPERVISOR, Role.AUDITOR
ALLOWED: dict[str, set[Role]] = {
    "list_agents": {R, D, S, A}, "list_cases": {R, D, S, A}, "get_case": {R, D, S, A},
    "claim_case": {R, S}, "assign_case": {R, S}, "run_diag": {R}, "run_fix": {R},
    "list_plugins": {R}, "ask_consent": {R, D}, "fanout": {R, S},
    "get_recording": {R, S, A}, "escalate_case": {R, D, S}, "list_tickets": {R, D, F, S, A},
    "get_ticket": {R, D, F, S, A}, "offer_visit": {R, D}, "book_visit": {D, S},
    "update_ticket": {D, F, S}, "open_tunnel": {R},
}
TICKET = "TK-20261206-9999"  # none: an allowed request gets not_found, not a role refusal


@dataclass
class World:
    h: Harness
    agent_home: Path
    case: str
    agent_id: str
    techs: dict[Role, Path]


def add_tech(h: Harness, name: str, *roles: Role) -> Path:
    home = h.root / ("T-" + name)
    flags = [a for r in roles for a in ("--role", r.value)]
    h.run("hw-server", "tech", "add", "--home", str(h.server_home), name, "--out", str(home),
          *flags)
    return home


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    h = Harness(tmp_path_factory.mktemp("roles"))
    try:
        h.init_server()
        h.start_server()
        home = h.enroll("A")
        h.start_agent(home)
        case = h.help(home).splitlines()[0]
        techs = {role: add_tech(h, name, role) for role, name in NAMES.items()}
        db = sqlite3.connect(h.server_home / "store.db")
        (agent_id,) = db.execute("SELECT agent_id FROM cases WHERE number = ?",
                                 (case,)).fetchone()
        db.close()
        yield World(h, home, case, agent_id, techs)
    finally:
        h.stop_all()


def requests(client: TechClient, case: str, agent_id: str) -> dict[str, m.AnyMessage]:
    """One request of every kind a technician sends, signed where it must be."""
    def signed(action: m.Action, **args: object) -> m.SignedCommand:
        return client.sign(agent_id=agent_id, case=case, action=action, args=dict(args))

    rid = client.new_id
    return {
        "list_agents": m.ListAgents(id=rid()),
        "list_cases": m.ListCases(id=rid()),
        "get_case": m.GetCase(id=rid(), case=case),
        "get_recording": m.GetRecording(id=rid(), case=case),
        "list_tickets": m.ListTickets(id=rid()),
        "get_ticket": m.GetTicket(id=rid(), ticket=TICKET),
        "run_diag": m.RunDiag(id=rid(), case=case, command=signed(m.Action.DIAG), timeout=5),
        "run_fix": m.RunFix(id=rid(), case=case, timeout=5, command=signed(
            m.Action.FIX, fixer="dns.flush", dry_run=True)),
        "list_plugins": m.ListPlugins(id=rid(), case=case, command=signed(m.Action.PLUGINS),
                                      timeout=5),
        "ask_consent": m.AskConsent(id=rid(), case=case, timeout=2, command=signed(
            m.Action.CONSENT, scopes=["book-visit"], minutes=5)),
        "offer_visit": m.OfferVisit(id=rid(), ticket=TICKET, case=case, timeout=5,
                                    command=signed(m.Action.BOOK_VISIT, ticket=TICKET)),
        "fanout": m.Fanout(id=rid(), command=client.sign_fanout("all"), timeout=3),
        "book_visit": m.BookVisit(id=rid(), ticket=TICKET, accepted_by="Li Wei",
                                  start=datetime.now(UTC) + timedelta(days=2)),
        "update_ticket": m.UpdateTicket(id=rid(), ticket=TICKET, to=m.TicketState.PREPARED),
        "escalate_case": m.EscalateCase(id=rid(), case=case, reason="fan is broken"),
        "claim_case": m.ClaimCase(id=rid(), case=case),
        "assign_case": m.AssignCase(id=rid(), case=case, to=NAMES[Role.REMOTE]),
        "open_tunnel": m.OpenTunnel(id=rid(), case=case, command=signed(m.Action.TUNNEL),
                                    timeout=3),
    }


async def answers(world: World, role: Role) -> dict[str, str]:
    """Each request's outcome for this technician: ``ok`` or ``<code>: <message>``."""
    out: dict[str, str] = {}
    async with TechClient(Profile.load(world.techs[role])) as client:
        for what, msg in requests(client, world.case, world.agent_id).items():
            try:
                await client.call(msg)
                out[what] = "ok"
            except TechError as exc:
                out[what] = str(exc)
    return out


def audit_rows(h: Harness, event: str) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(h.server_home / "store.db")
    try:
        return db.execute("SELECT actor, subject, detail FROM audit WHERE event = ? ORDER BY id",
                          (event,)).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("role", [A, F, D, S, R], ids=str)  # remote last: it claims the case
async def test_each_role_against_each_request_on_the_server(world: World, role: Role) -> None:
    got = await answers(world, role)
    assert set(got) == set(ALLOWED)
    for what, outcome in got.items():
        role_refused = outcome.startswith(f"refused: {what} needs the ")
        if role in ALLOWED[what]:
            assert not role_refused, (what, outcome)
        else:
            assert role_refused, (what, outcome)
            assert f"certificate has {role.value}" in outcome
    refused = {json.loads(d)["request"] for actor, _s, d in audit_rows(world.h, "tech.refused")
               if actor == f"tech:{NAMES[role]}" and "needs the" in json.loads(d)["why"]}
    assert refused == {w for w in ALLOWED if role not in ALLOWED[w]}, "each refusal is audited"


def test_tech_list_shows_the_roles(world: World) -> None:
    out = json.loads(world.h.run("hw-server", "tech", "list", "--home",
                                 str(world.h.server_home), "--json").stdout)
    assert {t["name"]: t["roles"] for t in out} == {
        name: [role.value] for role, name in NAMES.items()}
    text = world.h.run("hw-server", "tech", "list", "--home", str(world.h.server_home)).stdout
    assert "dana" in text and "desk" in text


def test_tech_add_refuses_an_unknown_role(world: World) -> None:
    p = world.h.run("hw-server", "tech", "add", "--home", str(world.h.server_home), "zed",
                    "--out", str(world.h.root / "T-zed"), "--role", "root", check=False)
    assert p.returncode == 2 and "invalid choice: 'root'" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (world.h.root / "T-zed").exists()


async def test_a_desk_certificate_cannot_diagnose_on_the_agent(world: World) -> None:
    """The agent's own check on a command the server would have refused: a desk-only
    certificate from `hw-server tech add --role desk`, a customer grant for diagnostics to
    that technician, a correctly signed diag command delivered as the server would — the
    agent refuses it `wrong_role` and runs nothing. A remote certificate, same grant, runs."""
    h = world.h
    home = h.enroll("A-desk")
    # the organisation-signed revocation list the server sends at every connect
    shutil.copyfile(h.server_home / SIGNED_FILE, home / SIGNED_FILE)
    agent = Agent(AgentHome(home), get_plugin_manager(autoload=False))
    try:
        case = "HW-20261206-0001"
        for name in ("dana", "rita"):
            agent.consents.grant(case=case, tech=name, scopes=[m.Scope.DIAGNOSTICS],
                                 duration=timedelta(hours=1), now=datetime.now(UTC),
                                 via="test", policy=Policy())

        def request(tech: Path) -> m.Request:
            client = TechClient(Profile.load(tech))
            signed = client.sign(agent_id=agent.state.agent_id, case=case,
                                 action=m.Action.DIAG, args={"probes": ["system"]})
            return m.Request(id="rq-" + secrets.token_hex(4), case=case, action=m.Action.DIAG,
                             tech=client.profile.name, command=signed)

        refused = await agent._act(request(world.techs[Role.DESK]))
        assert not refused.ok and refused.error_code is m.ErrorCode.REFUSED
        assert refused.error.startswith("wrong_role: diag needs the remote role")
        assert not refused.reports
        ran = await agent._act(request(world.techs[Role.REMOTE]))
        assert ran.ok, ran.error
        log = "\n".join(e.detail for e in agent.store.entries())
        assert "wrong_role" in log and "dana ran diagnostics" not in log
    finally:
        agent.store.close()
        agent.consents.close()


async def test_a_server_that_forwards_a_desk_diag_still_gets_a_refusal(world: World) -> None:
    """A real agent process behind a server that checks no roles at all (the server's TLS
    identity, speaking the protocol, forwarding whatever it is given): the desk technician's
    signed diag is refused `wrong_role` by the agent although the customer granted it; the
    remote technician's, with the same grant, runs."""
    h = world.h
    home = h.enroll("A-fwd")
    agent = h.start_agent(home)
    case = h.help(home, "screen flickers").splitlines()[0]
    for role in (Role.DESK, Role.REMOTE):
        h.grant(home, case, NAMES[role], scopes="diagnostics")
    db = sqlite3.connect(h.server_home / "store.db")
    (agent_id, public_key) = db.execute(
        "SELECT agents.agent_id, agents.public_key FROM agents JOIN cases "
        "ON cases.agent_id = agents.agent_id WHERE cases.number = ?", (case,)).fetchone()
    db.close()
    h.procs[0].stop()  # the real server goes; the forwarding one takes its address

    results: asyncio.Queue[m.Result] = asyncio.Queue()
    signed = {role: TechClient(Profile.load(world.techs[role])).sign(
        agent_id=agent_id, case=case, action=m.Action.DIAG, args={"probes": ["system"]})
        for role in (Role.DESK, Role.REMOTE)}

    async def forwarder(ws: ServerConnection) -> None:
        session = ServerSession()
        hello = session.receive(await ws.recv(decode=False))
        if not isinstance(hello, m.Hello) or hello.mode is not m.Mode.RUN:
            return
        await ws.send(session.challenge(secrets.token_bytes(32), datetime.now(UTC)), text=True)
        session.verify(session.receive(await ws.recv(decode=False)),  # type: ignore[arg-type]
                       Ed25519PublicKey.from_public_bytes(public_key))
        await ws.send(session.send(m.Welcome(session_id="fwd", identity=agent_id,
                                             server_time=datetime.now(UTC))), text=True)
        for role, command in signed.items():
            await ws.send(session.send(m.Request(
                id=f"rq-{role.value}", case=case, action=m.Action.DIAG,
                tech=NAMES[role], command=command)), text=True)
        while True:
            msg = session.receive(await ws.recv(decode=False))
            if isinstance(msg, m.Result):
                await ws.send(session.send(m.Ack(re=msg.id)), text=True)
                await results.put(msg)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(h.server_home / "server.crt", h.server_home / "server.key")
    async with serve(forwarder, "127.0.0.1", h.port, ssl=ctx, compression=None):
        got = {}
        async with asyncio.timeout(60):
            while len(got) < 2:
                result = await results.get()
                got[result.re] = result
    agent.stop()
    desk, remote = got["rq-desk"], got["rq-remote"]
    assert not desk.ok and desk.error_code is m.ErrorCode.REFUSED
    assert desk.error.startswith("wrong_role: diag needs the remote role"), desk.error
    assert not desk.reports
    assert remote.ok and [r.probe for r in remote.reports] == ["system"], remote.error
    log = h.run("hw-agent", "log", "--home", str(home)).stdout
    assert "wrong_role" in log and "dana ran diagnostics" not in log
    h.start_server()  # for the tests after this one
