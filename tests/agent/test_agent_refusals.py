"""The agent's own checks on every command, with no server in between: each forgery or
misuse is refused with its own documented reason (docs/protocol.md#signed-commands)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.client import Agent
from agent.consent import Policy
from agent.home import AgentHome, AgentState
from plugins import get_plugin_manager
from proto import messages as m
from proto.command import Command, sign_command
from server import pki
from server.revocations import SIGNED_FILE, sign_in_home

CASE = "HW-20261126-0001"
NOW = datetime.now(UTC)


@dataclass
class Tech:
    name: str
    key: Ed25519PrivateKey
    cert: str

    def sign(self, *, agent_id: str = "ag-test", case: str = CASE,
             action: m.Action = m.Action.DIAG, args: dict[str, object] | None = None,
             issued: datetime | None = None, lifetime: timedelta = timedelta(minutes=5),
             ) -> m.SignedCommand:
        issued = issued or datetime.now(UTC)
        cmd = Command(agent_id=agent_id, case=case, action=action.value, tech=self.name,
                      nonce=secrets.token_bytes(16), issued_at=issued,
                      expires_at=issued + lifetime,
                      args=args if args is not None else {"probes": ["system"]})
        return sign_command(cmd, certificate=self.cert, key=self.key)


def make_tech(org_home: Path, out: Path, name: str) -> Tech:
    pki.issue_tech(org_home, name=name, out=out, now=NOW)
    key = serialization.load_ssh_private_key((out / "tech.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return Tech(name, key, (out / "tech.key-cert.pub").read_text().strip())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Agent, Tech, Tech, Tech]]:
    org, rogue, home = tmp_path / "org", tmp_path / "rogue", tmp_path / "A"
    for d in (org, rogue, home):
        d.mkdir()
    pki.make_org_key(org)
    pki.make_org_key(rogue)
    pki.make_ca(home, now=NOW)
    state = AgentState(agent_id="ag-test", urls=["wss://127.0.0.1:9"], customer="Li Wei",
                       ca_sha256=pki.ca_fingerprint((home / "ca.crt").read_bytes()).hex(),
                       org_pub=pki.org_public_raw(org).hex(), enrolled_at=NOW.isoformat())
    AgentHome(home).save(state, Ed25519PrivateKey.generate())
    # a fresh organisation-signed revocation list, as the server sends it at every connect
    sign_in_home(org, pki.org_public_raw(org), revoked=[], now=datetime.now(UTC))
    shutil.copyfile(org / SIGNED_FILE, home / SIGNED_FILE)
    agent = Agent(AgentHome(home), get_plugin_manager(autoload=False))
    alice = make_tech(org, tmp_path / "alice", "alice")
    bob = make_tech(org, tmp_path / "bob", "bob")
    fake_alice = make_tech(rogue, tmp_path / "fake", "alice")
    agent.consents.grant(case=CASE, tech="alice", scopes=[m.Scope.DIAGNOSTICS],
                         duration=timedelta(hours=1), now=datetime.now(UTC), via="test",
                         policy=Policy())
    yield agent, alice, bob, fake_alice
    agent.store.close()
    agent.consents.close()


def request(signed: m.SignedCommand, *, case: str = CASE) -> m.Request:
    return m.Request(id="rq-" + secrets.token_hex(4), case=case, action=m.Action.DIAG,
                     tech="alice", command=signed)


async def test_a_granted_signed_command_runs(world: tuple[Agent, Tech, Tech, Tech]) -> None:
    agent, alice, _, _ = world
    result = await agent._act(request(alice.sign()))
    assert result.ok, result.error
    assert [r.probe for r in result.reports] == ["system"]


async def test_every_forgery_is_refused_with_its_own_reason(
        world: tuple[Agent, Tech, Tech, Tech]) -> None:
    agent, alice, bob, fake_alice = world
    replayed = alice.sign()
    assert (await agent._act(request(replayed))).ok
    signed_ok = alice.sign(args={"probes": ["system"]})
    tampered = m.SignedCommand(
        payload=signed_ok.payload.replace(b'"system"', b'"memory"'),
        certificate=signed_ok.certificate, signature=signed_ok.signature)
    revoked_alice = alice.sign()
    cases = {
        "replayed": request(replayed),
        "expired": request(alice.sign(issued=datetime.now(UTC) - timedelta(minutes=8),
                                      lifetime=timedelta(minutes=5))),
        "wrong_agent": request(alice.sign(agent_id="ag-other")),
        "wrong_case": request(alice.sign(case="HW-20261126-0002")),
        "bad_signature": request(tampered),
        "untrusted_certificate": request(fake_alice.sign()),
        "no_consent": request(bob.sign()),
        "unsigned": m.Request(id="rq-u", case=CASE, action=m.Action.DIAG, tech="alice"),
    }
    reasons = {}
    for expected, req in cases.items():
        result = await agent._act(req)
        assert not result.ok and result.error_code is m.ErrorCode.REFUSED, expected
        reasons[expected] = result.error.split(":", 1)[0]
    assert reasons == {k: k for k in cases}
    agent.revoked = frozenset({pki.verify_tech_certificate(
        alice.cert, org_pub=agent.org_pub, name="alice")[1]})
    result = await agent._act(request(revoked_alice))
    assert result.error.startswith("revoked:")
    log = "\n".join(e.detail for e in agent.store.entries())
    for reason in [*cases, "revoked"]:
        assert reason in log, f"the local log says why ({reason})"


async def test_a_replay_after_an_agent_restart_is_refused(
        world: tuple[Agent, Tech, Tech, Tech]) -> None:
    agent, alice, _, _ = world
    signed = alice.sign()
    assert (await agent._act(request(signed))).ok
    restarted = Agent(agent.home, agent.pm)
    try:
        result = await restarted._act(request(signed))
        assert result.error.startswith("replayed:")
    finally:
        restarted.store.close()
        restarted.consents.close()


def _ping(tech: Tech, audience: str = "all") -> m.Ping:
    from proto.command import FanoutCommand, sign_fanout

    now = datetime.now(UTC)
    cmd = FanoutCommand(audience=audience, action="ping", tech=tech.name,
                        nonce=secrets.token_bytes(16), issued_at=now,
                        expires_at=now + timedelta(minutes=5))
    return m.Ping(id="fo-" + secrets.token_hex(4),
                  command=sign_fanout(cmd, certificate=tech.cert, key=tech.key))


def test_the_agent_checks_a_fanout_ping_itself(world: tuple[Agent, Tech, Tech, Tech]) -> None:
    """What a server cannot make the agent accept: another customer's audience, a replay
    (also after a restart), a foreign org's certificate, a revoked key."""
    agent, alice, bob, fake_alice = world
    ping = _ping(alice)
    assert agent._ping(ping) == m.Pong(re=ping.id, ok=True)  # no consent grant needed
    assert agent._ping(_ping(bob, "customer:Li Wei")).ok  # its own customer
    refusals = {
        "wrong_audience": _ping(alice, "customer:Zhang San"),
        "replayed": ping,
        "untrusted_certificate": _ping(fake_alice),
    }
    for reason, bad in refusals.items():
        pong = agent._ping(bad)
        assert (pong.ok, pong.reason) == (False, reason), pong
        assert pong.error and "\n" not in pong.error
    # the nonce survives a restart of the agent, like other commands' nonces
    again = Agent(agent.home, get_plugin_manager(autoload=False))
    try:
        assert again._ping(ping).reason == "replayed"
    finally:
        again.store.close()
        again.consents.close()
    agent.revoked = frozenset({pki.verify_tech_certificate(
        alice.cert, org_pub=agent.org_pub, name="alice")[1]})
    assert agent._ping(_ping(alice)).reason == "revoked"
    log = [e.detail for e in agent.store.entries()]
    assert sum("pinged" in d for d in log) == 2
    assert sum(d.startswith("fan-out") for d in log) == 5  # every refusal is logged
