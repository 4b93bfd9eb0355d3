"""The agent's SSH server and the technician's client use one modern algorithm set."""

from __future__ import annotations

from asyncssh.kex import get_kex_algs

from agent import tunnel
from proto import sshalgs
from tech import ssh


def test_the_agent_offers_what_the_technician_asks_for() -> None:
    server, client = tunnel.ssh_algorithms(), ssh.ssh_algorithms()
    assert {k: v for k, v in client.items() if k != "server_host_key_algs"} == server
    assert client["server_host_key_algs"] == ["ssh-ed25519"]


def test_only_key_exchanges_this_asyncssh_has_and_nothing_legacy() -> None:
    kex = tunnel.ssh_algorithms()["kex_algs"]
    supported = {alg.decode() for alg in get_kex_algs()}
    assert kex and set(kex) <= supported and "curve25519-sha256" in kex
    everything = " ".join(alg for algs in tunnel.ssh_algorithms().values() for alg in algs)
    for legacy in ("sha1", "nistp", "group14", "cbc", "ctr", "md5", "umac"):
        assert legacy not in everything
    assert all(mac.endswith("-etm@openssh.com") for mac in sshalgs.MAC_ALGS)
