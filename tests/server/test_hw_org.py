"""``hw-org``: the offline organisation tool, and the server commands that take its output
(``hw-server init --org-pub``, ``tech add --cert``, ``revocations load``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    load_ssh_public_identity,
)

from proto import codec
from proto import messages as m
from proto.certs import verify_user_certificate
from proto.revocation import verify_list
from proto.roles import ROLES_EXTENSION, Role, parse_roles
from server import pki
from server.cli import main as server_main
from server.org.cli import main as org_main
from server.org.orgdir import OrgDir
from server.revocations import SIGNED_FILE, SIMPLE_VALIDITY, RevocationKeeper, read_signed
from tests.harness import wait_until

BIN = Path(sys.executable).parent
SSH_KEYGEN = shutil.which("ssh-keygen")
SSH_AGENT = shutil.which("ssh-agent")
SSH_ADD = shutil.which("ssh-add")
needs_openssh = pytest.mark.skipif(SSH_KEYGEN is None, reason="needs OpenSSH's ssh-keygen")


def keygen(path: Path) -> Path:
    assert SSH_KEYGEN is not None
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", str(path)],
                   check=True)
    return path.with_name(path.name + ".pub")


def org_pub(org: Path) -> bytes:
    return OrgDir.open(org).org_pub


def cert_of(path: Path) -> SSHCertificate:
    cert = load_ssh_public_identity(path.read_bytes())
    assert isinstance(cert, SSHCertificate)
    return cert


@pytest.fixture
def org(tmp_path: Path) -> Path:
    path = tmp_path / "ORG"
    assert org_main(["init", str(path)]) == 0
    return path


@needs_openssh
def test_sign_with_the_key_file_makes_a_certificate_with_roles(org: Path, tmp_path: Path
                                                               ) -> None:
    pub = keygen(tmp_path / "tech.key")
    assert org_main(["sign", "--dir", str(org), "--name", "alice", "--role", "remote",
                     "--role", "desk", "--days", "30", str(pub)]) == 0
    certfile = tmp_path / "tech.key-cert.pub"
    info = verify_user_certificate(certfile.read_text(), org_pub=org_pub(org),
                                   principal="alice", now=datetime.now(UTC))
    assert info.key_id == "helloword-tech:alice"
    assert timedelta(days=29) < info.valid_before - datetime.now(UTC) <= timedelta(days=30)
    cert = cert_of(certfile)
    assert parse_roles(cert.extensions[ROLES_EXTENSION.encode()]) == {Role.REMOTE, Role.DESK}
    assert not cert.critical_options
    # stock OpenSSH reads it too
    assert SSH_KEYGEN is not None
    shown = subprocess.run([SSH_KEYGEN, "-L", "-f", str(certfile)], capture_output=True,
                           text=True, check=True).stdout
    assert "alice" in shown and ROLES_EXTENSION in shown
    assert OrgDir.open(org).issued()[0]["fingerprint"] == info.fingerprint


@needs_openssh
def test_stock_ssh_keygen_certificate_is_accepted(org: Path, tmp_path: Path) -> None:
    """The documented line (docs/operations.md) makes a certificate the server and the agent
    accept, with the roles it names."""
    pub = keygen(tmp_path / "tech.key")
    assert SSH_KEYGEN is not None
    subprocess.run([SSH_KEYGEN, "-q", "-s", str(org / "org.key"), "-I",
                    "helloword-tech:alice", "-n", "alice", "-V", "+90d", "-O", "clear", "-O",
                    "extension:roles@helloword.cn=remote,desk", str(pub)], check=True)
    text = (tmp_path / "tech.key-cert.pub").read_text()
    issued = pki.check_tech_certificate(text, org_pub=org_pub(org), name="alice",
                                        now=datetime.now(UTC))
    assert issued.key_fingerprint.startswith("SHA256:")
    assert parse_roles(cert_of(tmp_path / "tech.key-cert.pub").extensions[
        ROLES_EXTENSION.encode()]) == {Role.REMOTE, Role.DESK}


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[str]:
    """A real ``ssh-agent`` on a socket of its own; yields the socket path."""
    if SSH_AGENT is None or SSH_ADD is None:
        pytest.skip("needs OpenSSH's ssh-agent and ssh-add")
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen([SSH_AGENT, "-D", "-a", sock], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(sock) or proc.poll() is not None, timeout=10,
                   what="ssh-agent's socket")
        assert proc.poll() is None, "ssh-agent exited"
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@needs_openssh
def test_sign_through_ssh_agent(tmp_path: Path, ssh_agent: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The key lives in ssh-agent only: the directory holds org.pub, the agent signs the
    certificate and the revocation list."""
    keys = tmp_path / "KEYS"
    assert org_main(["init", str(keys)]) == 0          # the key pair, as a token would hold
    org = tmp_path / "ORG"
    assert org_main(["init", str(org), "--public-key", str(keys / "org.pub")]) == 0
    assert not (org / "org.key").exists()
    monkeypatch.setenv("SSH_AUTH_SOCK", ssh_agent)
    pub = keygen(tmp_path / "tech.key")

    # not loaded yet: a clear refusal
    assert org_main(["sign", "--dir", str(org), "--agent", "--name", "alice", str(pub)]) == 1
    assert SSH_ADD is not None
    subprocess.run([SSH_ADD, "-q", str(keys / "org.key")], check=True,
                   env={**os.environ, "SSH_AUTH_SOCK": ssh_agent})
    assert org_main(["sign", "--dir", str(org), "--agent", "--name", "alice", "--role",
                     "field", str(pub)]) == 0
    certfile = tmp_path / "tech.key-cert.pub"
    verify_user_certificate(certfile.read_text(), org_pub=org_pub(org), principal="alice",
                            now=datetime.now(UTC))
    assert parse_roles(cert_of(certfile).extensions[ROLES_EXTENSION.encode()]) == {Role.FIELD}
    assert SSH_KEYGEN is not None
    subprocess.run([SSH_KEYGEN, "-L", "-f", str(certfile)], check=True, capture_output=True)

    assert org_main(["revoke", "--dir", str(org), "--name", "alice"]) == 0
    out = tmp_path / "list.signed"
    assert org_main(["revocations", "--dir", str(org), "--agent", "--out", str(out)]) == 0
    signed = codec.decode(out.read_bytes().strip())
    assert isinstance(signed, m.SignedRevocations)
    body = verify_list(signed, org_pub=org_pub(org))
    assert body.fingerprints == [OrgDir.open(org).issued()[0]["fingerprint"]]


def test_without_the_key_and_without_agent_it_says_what_to_do(
        tmp_path: Path, org: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pubonly = tmp_path / "PUB"
    assert org_main(["init", str(pubonly), "--public-key", str(org / "org.pub")]) == 0
    capsys.readouterr()
    assert org_main(["revocations", "--dir", str(pubonly), "--out",
                     str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "--agent" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_sequence_numbers_only_grow(org: Path, tmp_path: Path) -> None:
    seqs = []
    for i in range(3):
        out = tmp_path / f"l{i}"
        assert org_main(["revocations", "--dir", str(org), "--out", str(out)]) == 0
        signed = codec.decode(out.read_bytes().strip())
        assert isinstance(signed, m.SignedRevocations)
        seqs.append(verify_list(signed, org_pub=org_pub(org)).sequence)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


@pytest.mark.parametrize("argv", [
    ["sign", "--name", "alice", "--days", "99999999999999999999", "x.pub"],
    ["sign", "--name", "alice", "--days", "-1", "x.pub"],
    ["sign", "--name", "alice", "--role", "king", "x.pub"],
    ["revocations", "--out", "x", "--issued", "yesterday"],
    ["revoke", "--name", "a", "--fingerprint", "SHA256:x"],
    ["revoke"],
])
def test_bad_input_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        org_main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_init_refuses_an_existing_directory(org: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    before = (org / "org.key").read_bytes()
    assert org_main(["init", str(org)]) == 1
    assert "already holds" in capsys.readouterr().err
    assert (org / "org.key").read_bytes() == before


# -- the server side ---------------------------------------------------------------------


def server_init(home: Path, *extra: str) -> int:
    return server_main(["init", "--home", str(home), "--listen", "127.0.0.1:0", *extra])


def test_server_init_with_org_pub_keeps_no_private_key(
        org: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "S"
    assert server_init(home, "--org-pub", str(org / "org.pub")) == 0
    out = capsys.readouterr().out
    assert "offline organisation key" in out and "hw-server revocations load" in out
    assert not (home / "org.key").exists()
    assert pki.org_public_raw(home) == org_pub(org)
    assert not (home / SIGNED_FILE).exists()


def test_server_init_simple_layout_says_so(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "S"
    assert server_init(home) == 0
    out = capsys.readouterr().out
    assert "layout        simple" in out and "--org-pub" in out
    assert (home / "org.key").exists() and (home / SIGNED_FILE).exists()


@pytest.mark.parametrize("what", ["private", "garbage", "missing"])
def test_server_init_refuses_a_bad_org_pub(org: Path, tmp_path: Path, what: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    source = {"private": org / "org.key", "missing": tmp_path / "nope"}.get(what)
    if source is None:
        source = tmp_path / "garbage.pub"
        source.write_text("ssh-ed25519 not-base64\n")
    home = tmp_path / "S"
    assert server_init(home, "--org-pub", str(source)) == 1
    err = capsys.readouterr().err
    assert "org.pub" in err or "private key" in err
    assert not home.exists()


def test_revocations_load_checks_signature_and_sequence(
        org: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "S"
    assert server_init(home, "--org-pub", str(org / "org.pub")) == 0
    first, second = tmp_path / "1.signed", tmp_path / "2.signed"
    assert org_main(["revocations", "--dir", str(org), "--out", str(first)]) == 0
    assert org_main(["revocations", "--dir", str(org), "--out", str(second)]) == 0
    capsys.readouterr()
    assert server_main(["revocations", "load", "--home", str(home), str(second)]) == 0
    held = (home / SIGNED_FILE).read_bytes()
    assert server_main(["revocations", "load", "--home", str(home), str(first)]) == 1
    assert "lower than the one" in capsys.readouterr().err
    rogue = tmp_path / "ROGUE"
    assert org_main(["init", str(rogue)]) == 0
    assert org_main(["revocations", "--dir", str(rogue), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert server_main(["revocations", "load", "--home", str(home),
                        str(tmp_path / "r")]) == 1
    assert "not signed by this organisation's key" in capsys.readouterr().err
    (tmp_path / "junk").write_text("hello")
    assert server_main(["revocations", "load", "--home", str(home),
                        str(tmp_path / "junk")]) == 1
    assert "not a signed revocation list" in capsys.readouterr().err
    assert (home / SIGNED_FILE).read_bytes() == held  # nothing changed


# -- the running server's list (server/revocations.py) -----------------------------------

FP = "SHA256:" + "Q" * 43


def test_simple_layout_resigns_when_keys_change_and_before_next_update(tmp_path: Path) -> None:
    home = tmp_path / "S"
    assert server_init(home) == 0
    keeper = RevocationKeeper(home, pki.org_public_raw(home))
    now = datetime.now(UTC)
    first = keeper.current([], now)
    assert first is not None and keeper.body is not None
    seq = keeper.body.sequence
    assert keeper.current([], now + timedelta(minutes=1)) == first   # nothing to do
    changed = keeper.current([FP], now + timedelta(minutes=2))        # tech revoke
    assert changed != first and keeper.body.fingerprints == [FP]
    assert keeper.body.sequence > seq
    seq = keeper.body.sequence
    later = now + SIMPLE_VALIDITY * 0.75                              # half of it left
    assert keeper.current([FP], later) != changed
    assert keeper.body.sequence > seq and keeper.body.next_update > later
    assert keeper.warning(later) is None  # it signs its own: nothing to warn about


def test_offline_layout_warns_as_next_update_approaches(org: Path, tmp_path: Path) -> None:
    home = tmp_path / "S"
    assert server_init(home, "--org-pub", str(org / "org.pub")) == 0
    keeper = RevocationKeeper(home, pki.org_public_raw(home))
    now = datetime.now(UTC)
    assert keeper.current([], now) is None
    missing = keeper.warning(now)
    assert missing is not None and "no signed revocation list" in missing
    assert keeper.warning(now + timedelta(minutes=5)) is None  # once per WARN_EVERY
    assert org_main(["revocations", "--dir", str(org), "--days", "7",
                     "--out", str(tmp_path / "l")]) == 0
    assert server_main(["revocations", "load", "--home", str(home), str(tmp_path / "l")]) == 0
    assert keeper.current([FP], now) is not None  # re-read from the home, never re-signed
    assert keeper.body is not None and keeper.body.fingerprints == []
    assert keeper.warning(now + timedelta(days=1)) is None
    due = keeper.warning(now + timedelta(days=6))
    assert due is not None and "due to be replaced" in due and "hw-org revocations" in due


def test_tech_revoke_in_the_simple_layout_resigns_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "S"
    assert server_init(home) == 0
    assert server_main(["tech", "add", "--home", str(home), "alice", "--out",
                        str(tmp_path / "T")]) == 0
    capsys.readouterr()
    assert server_main(["tech", "revoke", "--home", str(home), "alice"]) == 0
    assert "signed revocation list number" in capsys.readouterr().out
    held = read_signed(home, pki.org_public_raw(home))
    assert held is not None
    fp = pki.check_tech_certificate((tmp_path / "T" / "tech.key-cert.pub").read_text(),
                                    org_pub=pki.org_public_raw(home), name="alice",
                                    now=datetime.now(UTC)).key_fingerprint
    assert held[1].fingerprints == [fp]
