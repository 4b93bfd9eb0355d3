"""The signed revocation list in a server home (server/revocations.py): written through a
temporary file of its own, so `hw-server tech revoke` and a running server signing at the
same moment do not trip over each other; a list that cannot be written is reported after
the revocation, which stands, with what to do, never as a bare OS error."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proto import codec
from proto import messages as m
from server import pki, revocations

BIN = Path(sys.executable).parent


def hw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hw-server"), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A simple-layout home (org.key in it) with technician alice."""
    path = tmp_path / "S"
    for args in (("init", "--home", str(path), "--listen", "127.0.0.1:9"),
                 ("tech", "add", "--home", str(path), "alice", "--out",
                  str(tmp_path / "T-alice"))):
        p = hw(*args)
        assert p.returncode == 0, p.stderr
    assert revocations.has_org_key(path)
    return path


def _revoked_in_store(home: Path) -> list[str]:
    p = hw("tech", "list", "--home", str(home), "--json")
    assert p.returncode == 0, p.stderr
    return [t["name"] for t in json.loads(p.stdout) if t.get("revoked_at")]


def test_revoke_signs_even_when_another_writer_holds_the_usual_temporary_name(
        home: Path) -> None:
    """Another writer's temporary file (here: left behind, in the way) does not stop the
    list from being signed."""
    (home / "revocations.signed.tmp").mkdir()
    p = hw("tech", "revoke", "--home", str(home), "alice")
    assert p.returncode == 0, p.stderr
    signed = codec.decode((home / "revocations.signed").read_bytes())
    assert isinstance(signed, m.SignedRevocations)
    assert sorted(x.name for x in home.iterdir() if "revocations" in x.name) == \
        ["revocations.signed", "revocations.signed.tmp"], "no temporary file of ours left"


def test_two_signers_at_the_same_moment_both_succeed(home: Path) -> None:
    org_pub = pki.org_public_raw(home)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def sign() -> None:
        start.wait()
        for _ in range(200):
            try:
                revocations.sign_in_home(home, org_pub, revoked=["SHA256:" + "A" * 43],
                                         now=datetime.now(UTC))
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)
                return

    threads = [threading.Thread(target=sign) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert revocations.read_signed(home, org_pub) is not None
    assert [x.name for x in home.iterdir() if "revocations" in x.name] == \
        ["revocations.signed"]


def test_a_list_that_cannot_be_written_is_reported_and_the_revocation_stands(
        home: Path) -> None:
    (home / "revocations.signed").unlink(missing_ok=True)
    (home / "revocations.signed").mkdir()  # something in its place
    p = hw("tech", "revoke", "--home", str(home), "alice")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    err = p.stderr
    assert "alice is revoked" in err and "stands" in err, err
    assert "revocations.signed" in err and "hw-server tech revoke" in err and "again" in err
    assert _revoked_in_store(home) == ["alice"]
