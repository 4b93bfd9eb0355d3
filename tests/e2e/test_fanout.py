"""Fan-out end to end: one signed ping, checked once by the server and by every agent."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from proto import messages as m
from tech.client import Profile, TechClient, TechError
from tests.harness import Harness, wait_until

pytestmark = pytest.mark.e2e


def _audit(h: Harness) -> list[dict[str, Any]]:
    out = h.run("hw-server", "audit", "show", "--home", str(h.server_home), "--json").stdout
    entries: list[dict[str, Any]] = json.loads(out)
    return entries


def _ping(h: Harness, tech: Path, *args: str) -> tuple[int, dict[str, Any]]:
    p = h.run("hw-tech", "--home", str(tech), "ping", *args, "--json", check=False)
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


def test_one_signed_ping_reaches_the_audience_and_each_agent_checks_it(
        harness: Harness) -> None:
    h = harness
    h.init_server()
    h.start_server()
    homes = [h.enroll("A"), h.enroll("B"), h.enroll("C", customer="Zhang San")]
    agents = [h.start_agent(home) for home in homes]
    alice = h.add_tech("alice")

    code, done = _ping(h, alice, "--all")
    assert code == 0 and done["sent"] == 3 and done["ok"] == 3 and done["misses"] == []

    code, done = _ping(h, alice, "--customer", "Zhang San")
    assert code == 0 and (done["sent"], done["ok"]) == (1, 1)
    code, done = _ping(h, alice, "--customer", "Nobody")
    assert code == 0 and (done["sent"], done["ok"]) == (0, 0)

    # every agent wrote the pings it checked to its own log; C got both, A and B one
    logs = [h.run("hw-agent", "log", "--home", str(home)).stdout for home in homes]
    assert [text.count("alice pinged") for text in logs] == [1, 1, 2]
    assert "pinged customer:Zhang San" in logs[2]

    # audited once per fan-out, not once per agent: relayed + done, with the counts
    entries = [e for e in _audit(h) if e["event"].startswith("fanout")]
    assert [e["event"] for e in entries] == ["fanout", "fanout.done"] * 3
    assert [e["detail"].get("sent") for e in entries[1::2]] == [3, 1, 0]
    assert all(e["detail"]["verdict"] == "relayed" for e in entries[0::2])

    # the technician lists agents by page, by customer, by online state
    a_id = json.loads((homes[0] / "agent.json").read_text())["agent_id"]
    agents[0].stop()
    assert [a["agent_id"] for a in h.tech_json(alice, "agents", "--offline")] == [a_id]
    assert len(h.tech_json(alice, "agents", "--online")) == 2
    assert [a["customer"] for a in h.tech_json(alice, "agents", "--customer", "Zhang San")] \
        == ["Zhang San"]

    async def pages() -> list[tuple[int, int | None]]:
        seen, offset = [], 0
        async with TechClient(Profile.load(alice)) as client:
            while offset is not None:
                page = await client.call(m.ListAgents(id=client.new_id(), offset=offset,
                                                      limit=2))
                assert isinstance(page, m.AgentList)
                seen.append((len(page.agents), page.next_offset))
                offset = page.next_offset
        return seen

    assert asyncio.run(pages()) == [(2, 2), (1, None)]
    agents[0] = h.start_agent(homes[0])

    # an agent that does not answer is named, and the exit status says so
    agents[1].popen.send_signal(signal.SIGSTOP)
    try:
        code, done = _ping(h, alice, "--all", "--timeout", "2")
    finally:
        agents[1].popen.send_signal(signal.SIGCONT)
    b_id = json.loads((homes[1] / "agent.json").read_text())["agent_id"]
    assert code == 1 and (done["sent"], done["ok"]) == (3, 2)
    assert done["misses"] == [{"agent_id": b_id, "reason": "no_answer"}]
    assert done["counts"] == {"no_answer": 1}

    # an agent that drops its connection while a fan-out waits counts as gone at once
    agents[1].popen.send_signal(signal.SIGSTOP)
    relayed = len([e for e in _audit(h) if e["event"] == "fanout"])
    ping = h.spawn("ping", "hw-tech", "--home", str(alice), "ping", "--all", "--timeout", "600",
                   "--json")
    wait_until(lambda: len([e for e in _audit(h) if e["event"] == "fanout"]) > relayed,
               what="the fan-out to be relayed")
    agents[1].popen.send_signal(signal.SIGKILL)
    assert ping.popen.wait(120) == 1  # it ends when B goes, not at its 600 s timeout
    done = json.loads(ping.text())
    assert done["misses"] == [{"agent_id": b_id, "reason": "gone"}]


def test_the_server_refuses_a_replayed_or_altered_fanout_before_any_agent(
        harness: Harness) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home)
    alice = h.add_tech("alice")

    async def go() -> list[str]:
        outcomes = []
        async with TechClient(Profile.load(alice)) as client:
            signed = client.sign_fanout("all")
            for _ in range(2):
                try:
                    done = await client.call(m.Fanout(id=client.new_id(), command=signed))
                    assert isinstance(done, m.FanoutDone)
                    outcomes.append(f"ok {done.ok}/{done.sent}")
                except TechError as exc:
                    outcomes.append(str(exc))
            other = client.sign_fanout("customer:Li Wei")
            forged = m.SignedCommand(payload=other.payload, certificate=signed.certificate,
                                     signature=signed.signature)
            try:
                await client.call(m.Fanout(id=client.new_id(), command=forged))
            except TechError as exc:
                outcomes.append(str(exc))
        return outcomes

    first, replayed, forged = asyncio.run(go())
    assert first == "ok 1/1"
    assert replayed.startswith("refused: replayed")
    assert forged.startswith("refused: bad_signature")
    log = h.run("hw-agent", "log", "--home", str(home)).stdout
    assert log.count("alice pinged") == 1  # the refused ones never reached the agent
    verdicts = [(e["event"], e["detail"].get("verdict"), e["detail"].get("reason"))
                for e in _audit(h) if e["event"] == "fanout"]
    assert verdicts == [("fanout", "relayed", None), ("fanout", "refused", "replayed"),
                        ("fanout", "refused", "bad_signature")]


def test_an_agent_that_speaks_only_version_1_gets_no_ping_and_is_named(
        harness: Harness) -> None:
    import ssl

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from websockets.asyncio.client import connect

    from proto.session import ClientSession

    h = harness
    h.init_server()
    h.start_server()
    h.start_agent(h.enroll("NEW"))
    old = h.enroll("OLD")
    old_id = json.loads((old / "agent.json").read_text())["agent_id"]
    key = serialization.load_pem_private_key((old / "agent.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    alice = h.add_tech("alice")

    async def go() -> tuple[dict[str, Any], list[m.AnyMessage]]:
        ctx = ssl.create_default_context(cafile=str(h.server_home / "ca.crt"))
        async with connect(f"wss://127.0.0.1:{h.port}/agent", ssl=ctx,
                           compression=None) as ws:
            s = ClientSession(role=m.Role.AGENT, identity=old_id, versions=(1, 1))
            await ws.send(s.hello(software="hw-agent/0.9"), text=True)
            s.receive(await ws.recv(decode=False))
            await ws.send(s.prove(key.sign(s.proof_payload())), text=True)
            s.receive(await ws.recv(decode=False))
            assert s.version == 1
            _, done = await asyncio.to_thread(_ping, h, alice, "--all")
            received = []
            try:
                async with asyncio.timeout(1):
                    while True:
                        received.append(s.receive(await ws.recv(decode=False)))
            except TimeoutError:
                pass
            return done, received

    done, received = asyncio.run(go())
    assert (done["sent"], done["ok"]) == (2, 1)
    assert done["misses"] == [{"agent_id": old_id, "reason": "unsupported"}]
    assert not any(isinstance(msg, m.Ping) for msg in received)
