"""An agent whose disk is full (issue 13, break 5): the technician is told at once that
the agent cannot record the action, instead of waiting for "did not answer"; once space is
freed the agent works again. The agent's home is on a real, small tmpfs that the test
fills (it needs root to mount; skipped otherwise)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, mounted for the test (root only)."""
    where = tmp_path / "small"
    where.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small file system for the agent's home needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _fill(where: Path) -> Path:
    """Write a file until the file system is full (ENOSPC); return it."""
    filler = where / "filler"
    chunk = b"\0" * 4096
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                raise
    return filler


def test_a_full_disk_is_answered_at_once_with_what_to_do(
        harness: Harness, small_fs: Path) -> None:
    h = harness
    try:
        h.init_server()
        h.start_server()
        home = small_fs / "A"
        h.run("hw-agent", "enroll", "--home", str(home), h.token())
        agent = h.start_agent(home)
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        h.grant(home, case, "alice", scopes="diagnostics")
        assert h.run("hw-tech", "--home", str(alice), "diag", case, "--probes", "cpu",
                     check=False).returncode == 0

        filler = _fill(small_fs)
        p = h.run("hw-tech", "--home", str(alice), "diag", case, "--probes", "cpu",
                  check=False)
        assert p.returncode == 1, p.stdout
        assert "cannot record" in p.stderr and "free disk space" in p.stderr, p.stderr
        assert "did not answer" not in p.stderr
        assert agent.popen.poll() is None, "the agent is still running"

        filler.unlink()
        p = h.run("hw-tech", "--home", str(alice), "diag", case, "--probes", "cpu",
                  check=False)
        assert p.returncode == 0, p.stderr
        text = agent.text()
        assert "cannot record" in text
        assert "Task exception was never retrieved" not in text
    finally:
        h.stop_all()
