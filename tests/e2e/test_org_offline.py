"""The organisation key off the server: a whole case with no org.key in the server home,
technicians certified by ``hw-org`` and by stock ``ssh-keygen -s``, and the signed
revocation list with freshness (docs/security.md#organisation-key, #revocation-lists)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect

from proto import messages as m
from proto.session import ClientSession
from tests.harness import Harness, Proc, wait_until

pytestmark = pytest.mark.e2e

SSH_KEYGEN = shutil.which("ssh-keygen")


def keygen(path: Path) -> None:
    """A technician key made on the technician's own machine (stock OpenSSH)."""
    assert SSH_KEYGEN is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f",
                    str(path)], check=True)


def signed_list(h: Harness, org: Path, name: str, *extra: str) -> Path:
    out = h.root / name
    h.run("hw-org", "revocations", "--dir", str(org), "--out", str(out), *extra)
    return out


def load(h: Harness, path: Path) -> str:
    return h.run("hw-server", "revocations", "load", "--home", str(h.server_home),
                 str(path)).stdout


def offline_server(h: Harness) -> tuple[Path, str]:
    """``hw-org init`` + ``hw-server init --org-pub``; the first list signed and loaded."""
    org = h.root / "ORG"
    h.run("hw-org", "init", str(org))
    out = h.run("hw-server", "init", "--home", str(h.server_home), "--listen",
                f"127.0.0.1:{h.port}", "--org-pub", str(org / "org.pub")).stdout
    load(h, signed_list(h, org, "first.signed"))
    return org, out


def register(h: Harness, org: Path, name: str, *, stock: bool = False) -> Path:
    """A technician home whose key never left it, certified offline."""
    home = h.root / ("T-" + name)
    keygen(home / "tech.key")
    if stock:
        assert SSH_KEYGEN is not None
        subprocess.run([SSH_KEYGEN, "-q", "-s", str(org / "org.key"), "-I",
                        f"helloword-tech:{name}", "-n", name, "-V", "+90d", "-O", "clear",
                        "-O", "extension:roles@helloword.cn=remote", str(home / "tech.key.pub")],
                       check=True)
    else:
        h.run("hw-org", "sign", "--dir", str(org), "--name", name, "--role", "remote",
              "--days", "30", str(home / "tech.key.pub"))
    h.run("hw-server", "tech", "add", "--home", str(h.server_home), name, "--cert",
          str(home / "tech.key-cert.pub"), "--out", str(home))
    return home


def diag(h: Harness, tech: Path, case: str) -> subprocess.CompletedProcess[str]:
    return h.run("hw-tech", "--home", str(tech), "diag", case, "--probes", "system", "--json",
                 check=False)


async def after_welcome(h: Harness, home: Path, versions: tuple[int, int]
                        ) -> list[type]:
    """The message types an agent of protocol ``versions`` gets on a ``run`` session after
    ``welcome``, up to the server's refusal of a forged result (``home``: an enrolled agent
    that is not running, or this session would replace its own)."""
    state = json.loads((home / "agent.json").read_text())
    key = serialization.load_pem_private_key((home / "agent.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    ctx = ssl.create_default_context(cafile=str(h.server_home / "ca.crt"))
    async with connect(f"wss://127.0.0.1:{h.port}/agent", ssl=ctx, compression=None) as ws:
        s = ClientSession(role=m.Role.AGENT, identity=state["agent_id"], versions=versions)
        await ws.send(s.hello(software="test", mode=m.Mode.RUN), text=True)
        s.receive(await ws.recv(decode=False))
        await ws.send(s.prove(key.sign(s.proof_payload())), text=True)
        s.receive(await ws.recv(decode=False))
        await ws.send(s.send(m.Result(id="rs-probe", re="rq-x", case="HW-20000101-0001",
                                      action=m.Action.DIAG, ok=True)), text=True)
        seen: list[type] = []
        while not seen or seen[-1] is not m.Error:
            seen.append(type(s.receive(await ws.recv(decode=False))))
        return seen


def start_case(h: Harness, customer: str = "Li Wei") -> tuple[Path, Proc, str]:
    home = h.enroll("A-" + customer.replace(" ", ""), customer=customer)
    agent = h.start_agent(home)
    case = h.help(home).splitlines()[0]
    return home, agent, case


@pytest.mark.skipif(SSH_KEYGEN is None, reason="needs OpenSSH's ssh-keygen")
def test_a_whole_case_with_the_org_key_offline(harness: Harness) -> None:
    h = harness
    org, init_out = offline_server(h)
    assert not (h.server_home / "org.key").exists()
    assert (h.server_home / "org.pub").read_bytes().split()[:2] == \
        (org / "org.pub").read_bytes().split()[:2]
    assert "offline organisation key" in init_out and "cannot certify" in init_out
    h.start_server()
    home, _agent, case = start_case(h)

    # the server cannot certify anyone: tech add without a certificate says what to do
    p = h.run("hw-server", "tech", "add", "--home", str(h.server_home), "mallory", "--out",
              str(h.root / "T-mallory"), check=False)
    assert p.returncode == 1
    assert "no org.key" in p.stderr and "--cert" in p.stderr and "hw-org sign" in p.stderr
    assert "Traceback" not in p.stderr

    alice = register(h, org, "alice")             # hw-org sign
    bob = register(h, org, "bob", stock=True)     # stock ssh-keygen -s
    bobs_case = h.help(home).splitlines()[0]  # a remote technician works on cases of their own
    for name, tech, their_case in (("alice", alice, case), ("bob", bob, bobs_case)):
        h.grant(home, their_case, name)
        out = diag(h, tech, their_case)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)["result"]
        assert result["ok"] is True, result
        assert {r["probe"] for r in result["reports"]} == {"system"}

    # a certificate for another name, or from another organisation key, is not registered
    p = h.run("hw-server", "tech", "add", "--home", str(h.server_home), "carol", "--cert",
              str(alice / "tech.key-cert.pub"), "--out", str(h.root / "T-carol"), check=False)
    assert p.returncode == 1 and "not issued to the technician named" in p.stderr
    rogue = h.root / "ROGUE"
    h.run("hw-org", "init", str(rogue))
    keygen(h.root / "T-eve" / "tech.key")
    h.run("hw-org", "sign", "--dir", str(rogue), "--name", "eve", str(h.root / "T-eve" /
                                                                        "tech.key.pub"))
    p = h.run("hw-server", "tech", "add", "--home", str(h.server_home), "eve", "--cert",
              str(h.root / "T-eve" / "tech.key-cert.pub"), "--out", str(h.root / "T-eve"),
              check=False)
    assert p.returncode == 1 and "not issued by this organisation's key" in p.stderr

    # revoking on the server: refused by the server at once, and told what agents need
    p = h.run("hw-server", "tech", "revoke", "--home", str(h.server_home), "bob")
    assert "hw-org revoke --name bob" in p.stdout and "hw-server revocations load" in p.stdout
    p = h.run("hw-tech", "--home", str(bob), "agents", check=False)
    assert p.returncode == 1 and "revoked" in p.stderr


@pytest.mark.skipif(SSH_KEYGEN is None, reason="needs OpenSSH's ssh-keygen")
def test_an_agent_refuses_commands_once_its_list_is_stale(harness: Harness) -> None:
    h = harness
    org, _ = offline_server(h)
    h.start_server()
    home, _agent, case = start_case(h)
    alice = register(h, org, "alice")
    h.grant(home, case, "alice")
    assert json.loads(diag(h, alice, case).stdout)["result"]["ok"] is True

    # a list whose next update was due two days ago: past the agent's default grace (24 h)
    issued = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    load(h, signed_list(h, org, "old.signed", "--issued", issued, "--days", "1"))

    def refused() -> bool:
        out = diag(h, alice, case)
        return "stale revocation list" in out.stdout + out.stderr

    wait_until(refused, timeout=30, what="a stale list refused")
    out = diag(h, alice, case)
    assert out.returncode != 0 or json.loads(out.stdout)["result"]["ok"] is False
    assert "hw-org revocations" in out.stdout + out.stderr
    log = h.run("hw-agent", "log", "--home", str(home)).stdout
    assert "stale revocation list" in log

    # the organisation signs a fresh one: the agent takes commands again
    load(h, signed_list(h, org, "fresh.signed"))
    wait_until(lambda: diag(h, alice, case).returncode == 0, timeout=30,
               what="commands accepted again")
    assert json.loads(diag(h, alice, case).stdout)["result"]["ok"] is True


def test_version_2_agents_get_the_plain_list_only(harness: Harness) -> None:
    h = harness
    offline_server(h)
    h.start_server()
    home = h.enroll("QUIET")
    assert asyncio.run(after_welcome(h, home, (1, 2))) == [m.Revocations, m.Error]
    assert asyncio.run(after_welcome(h, home, (1, 3))) == [m.Revocations, m.SignedRevocations,
                                                           m.Error]


@pytest.mark.skipif(SSH_KEYGEN is None, reason="needs OpenSSH's ssh-keygen")
def test_a_server_that_rolls_the_list_back_cannot_unrevoke(harness: Harness) -> None:
    """The organisation revokes bob (not the server); a server restarted with the older
    list sends it, and the agent keeps the newer one: bob stays refused."""
    h = harness
    org, _ = offline_server(h)
    older = h.server_home / "revocations.signed"
    kept = h.root / "older.signed"
    shutil.copyfile(older, kept)
    server = h.start_server()
    home, agent, case = start_case(h)
    bob = register(h, org, "bob")
    h.grant(home, case, "bob")
    assert json.loads(diag(h, bob, case).stdout)["result"]["ok"] is True

    h.run("hw-org", "revoke", "--dir", str(org), "--name", "bob")
    load(h, signed_list(h, org, "bob-revoked.signed"))
    def refused() -> str:
        out = diag(h, bob, case)
        return out.stdout + out.stderr if out.returncode != 0 else ""

    assert "revoked" in wait_until(refused, timeout=30, what="bob refused by the agent")

    # the rolled-back server: older list, and its own store does not know bob is revoked
    server.stop()
    shutil.copyfile(kept, older)
    h.start_server()
    agent.wait_log(r"ignored revocation list number \d+ from the server", timeout=30)
    assert "revoked" in refused()

    # and the server itself refuses to load a list older than the one it holds
    load(h, signed_list(h, org, "newest.signed"))
    p = h.run("hw-server", "revocations", "load", "--home", str(h.server_home), str(kept),
              check=False)
    assert p.returncode == 1 and "lower than the one" in p.stderr


def test_an_open_ssh_session_ends_once_the_list_goes_stale(harness: Harness) -> None:
    """New commands are refused once the signed list is stale, and a session already open
    ends too: a server that withholds the next list cannot keep a tunnel open past it."""
    h = harness
    org, _ = offline_server(h)
    h.start_server()
    home, _agent, case = start_case(h)
    alice = register(h, org, "alice")
    h.grant(home, case, "alice", scopes="shell")
    session = h.spawn("long", "hw-tech", "--home", str(alice), "ssh", case, "--",
                      "echo started; sleep 300")
    session.wait_log("started")

    issued = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    load(h, signed_list(h, org, "old.signed", "--issued", issued, "--days", "1"))
    assert session.popen.wait(60) != 0
    log = h.run("hw-agent", "log", "--home", str(home)).stdout
    assert "session-closed" in log and "revocation list is out of date" in log
