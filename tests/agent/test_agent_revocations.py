"""The agent and the organisation-signed revocation list: only the pinned org key's lists,
never an older one (even after a restart), refusal once stale, the local grace policy
(docs/security.md#revocation-lists)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.client import Agent
from agent.consent import Policy
from agent.errors import ConsentError
from agent.home import AgentHome, AgentState
from agent.revocations import FILE, SignedRevocationStore
from plugins import get_plugin_manager
from proto import messages as m
from proto.command import Command, sign_command
from proto.revocation import make_list, sign_list
from server import pki

CASE = "HW-20261126-0002"


@dataclass
class World:
    agent: Agent
    org: Ed25519PrivateKey
    alice_cert: str
    alice_key: Ed25519PrivateKey
    alice_fp: str

    def signed(self, sequence: int, revoked: tuple[str, ...] = (), *,
               issued: datetime | None = None, days: float = 7,
               key: Ed25519PrivateKey | None = None) -> m.SignedRevocations:
        issued = issued or datetime.now(UTC)
        body = make_list(sequence=sequence, issued=issued,
                         next_update=issued + timedelta(days=days), fingerprints=set(revoked))
        return sign_list(body, key or self.org)

    def request(self) -> m.Request:
        now = datetime.now(UTC)
        cmd = Command(agent_id="ag-test", case=CASE, action="diag", tech="alice",
                      nonce=secrets.token_bytes(16), issued_at=now,
                      expires_at=now + timedelta(minutes=5), args={"probes": ["system"]})
        return m.Request(id="rq-" + secrets.token_hex(4), case=CASE, action=m.Action.DIAG,
                         tech="alice", command=sign_command(cmd, certificate=self.alice_cert,
                                                            key=self.alice_key))

    def receive(self, msg: m.AnyMessage) -> None:
        """What the agent does with a message from the server."""
        self.agent._dispatch(None, msg)  # type: ignore[arg-type]  # no link needed


def _agent(home: Path, policy: Policy | None = None) -> Agent:
    agent = Agent(AgentHome(home), get_plugin_manager(autoload=False), policy=policy)
    agent.consents.grant(case=CASE, tech="alice", scopes=[m.Scope.DIAGNOSTICS],
                         duration=timedelta(hours=1), now=datetime.now(UTC), via="test",
                         policy=Policy())
    return agent


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    org_dir, home = tmp_path / "org", tmp_path / "A"
    org_dir.mkdir()
    home.mkdir()
    pki.make_org_key(org_dir)
    pki.make_ca(home, now=datetime.now(UTC))
    state = AgentState(agent_id="ag-test", urls=["wss://127.0.0.1:9"], customer="Li Wei",
                       ca_sha256=pki.ca_fingerprint((home / "ca.crt").read_bytes()).hex(),
                       org_pub=pki.org_public_raw(org_dir).hex(),
                       enrolled_at=datetime.now(UTC).isoformat())
    AgentHome(home).save(state, Ed25519PrivateKey.generate())
    issued = pki.issue_tech(org_dir, name="alice", out=tmp_path / "alice",
                            now=datetime.now(UTC))
    key = serialization.load_ssh_private_key((tmp_path / "alice" / "tech.key").read_bytes(),
                                             None)
    assert isinstance(key, Ed25519PrivateKey)
    org = serialization.load_ssh_private_key((org_dir / "org.key").read_bytes(), None)
    assert isinstance(org, Ed25519PrivateKey)
    agent = _agent(home)
    w = World(agent, org, (tmp_path / "alice" / "tech.key-cert.pub").read_text().strip(), key,
              issued.key_fingerprint)
    yield w
    w.agent.store.close()
    w.agent.consents.close()


async def test_no_list_yet_refuses_with_what_to_do(world: World) -> None:
    result = await world.agent._act(world.request())
    assert not result.ok
    assert "no signed revocation list" in (result.error or "")
    assert "hw-server revocations load" in (result.error or "")


async def test_a_fresh_list_lets_commands_through(world: World) -> None:
    world.receive(world.signed(1))
    result = await world.agent._act(world.request())
    assert result.ok, result.error


async def test_a_list_signed_by_another_key_is_refused(world: World) -> None:
    world.receive(world.signed(1))
    held = (world.agent.home.path / FILE).read_bytes()
    rogue = Ed25519PrivateKey.generate()
    world.receive(world.signed(2, (world.alice_fp,), key=rogue))
    assert world.agent.signed_revocations.held is not None
    assert world.agent.signed_revocations.held.sequence == 1
    assert (world.agent.home.path / FILE).read_bytes() == held
    assert (await world.agent._act(world.request())).ok


async def test_a_lower_sequence_is_ignored_even_after_a_restart(world: World) -> None:
    world.receive(world.signed(5, (world.alice_fp,)))
    world.receive(world.signed(4))  # a server rolling back to before alice's revocation
    result = await world.agent._act(world.request())
    assert not result.ok and "revoked" in (result.error or "")
    restarted = SignedRevocationStore(world.agent.home.path, world.agent.org_pub)
    assert restarted.held is not None and restarted.held.sequence == 5
    assert world.alice_fp in restarted.fingerprints


async def test_the_server_cannot_unrevoke_with_its_plain_list(world: World) -> None:
    world.receive(world.signed(1, (world.alice_fp,)))
    world.receive(m.Revocations(fingerprints=[]))
    result = await world.agent._act(world.request())
    assert not result.ok and "revoked" in (result.error or "")


async def test_a_stale_list_refuses_commands_and_says_why(world: World) -> None:
    world.receive(world.signed(1, issued=datetime.now(UTC) - timedelta(days=3), days=1))
    result = await world.agent._act(world.request())
    assert not result.ok
    assert "stale revocation list" in (result.error or "")
    assert "hw-org revocations" in (result.error or "")
    world.receive(world.signed(2))
    assert (await world.agent._act(world.request())).ok


async def test_the_grace_is_local_policy(world: World, tmp_path: Path) -> None:
    world.receive(world.signed(1, issued=datetime.now(UTC) - timedelta(days=3), days=1))
    world.agent.store.close()
    world.agent.consents.close()
    policy = tmp_path / "policy.toml"
    policy.write_text("revocation_grace_hours = 72\n")
    lenient = _agent(world.agent.home.path, Policy.load(policy))
    world.agent = lenient
    assert (await lenient._act(world.request())).ok


@pytest.mark.parametrize("value", ["-1", "721", "true", '"24"'])
def test_bad_grace_is_refused(tmp_path: Path, value: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f"revocation_grace_hours = {value}\n")
    with pytest.raises(ConsentError, match="revocation_grace_hours"):
        Policy.load(policy)


def test_default_grace_is_a_day() -> None:
    assert Policy().revocation_grace == timedelta(hours=24)
