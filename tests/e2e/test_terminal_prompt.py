"""The customer answers in the agent's own terminal (a real pseudo-terminal here)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import BIN, Harness

pytestmark = pytest.mark.e2e


class Terminal:
    """``hw-agent run`` attached to a pseudo-terminal, as a customer would start it."""

    def __init__(self, h: Harness, home: Path, env: dict[str, str] | None = None) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [str(BIN / "hw-agent"), "run", "--home", str(home), "--retry-min", "0.1"],
            stdin=slave, stdout=slave, stderr=slave, env={**h.env, **(env or {})},
            close_fds=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never appeared; terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the process ended
                    raise AssertionError(f"agent ended; terminal shows:\n{self.seen}") from None

    def drain(self) -> str:
        """Everything the agent has written so far that was not read yet (no waiting)."""
        start = len(self.seen)
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk.decode(errors="replace")
        return self.seen[start:]

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)


def test_customer_grants_and_approves_in_the_terminal(harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    term = Terminal(h, home)
    try:
        term.expect("connected to wss://")
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        ask = h.spawn("ask", "hw-tech", "--home", str(alice), "consent-request", case,
                      "--scopes", "diagnostics,shell", "--json")
        term.expect("allow diagnostics? [y/N]")
        term.type("y")
        term.expect("allow shell? [y/N]")
        term.type("n")
        assert ask.popen.wait(60) == 0
        answer = json.loads(ask.text())
        assert answer["granted"] is True and answer["grant"]["scopes"] == ["diagnostics"]
        assert answer["grant"]["via"] == "terminal"
        p = h.run("hw-tech", "--home", str(alice), "diag", case, "--probes", "system",
                  check=False)
        assert p.returncode == 0, p.stderr
    finally:
        term.close()


def test_customer_declines_in_the_terminal(harness: Harness) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    term = Terminal(h, home)
    try:
        term.expect("connected to wss://")
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        ask = h.spawn("ask", "hw-tech", "--home", str(alice), "consent-request", case,
                      "--scopes", "diagnostics")
        term.expect("allow diagnostics? [y/N]")
        term.type("")
        assert ask.popen.wait(60) == 1
        assert "declined" in ask.text()
    finally:
        term.close()


def _agent_with_old_junk(h: Harness, tmp_path: Path) -> tuple[Path, Path, Terminal]:
    """A server and an agent in a terminal whose temp dir holds one 30-day-old file (its
    inode-change time recorded as such a file shows it: the agedfiles test plugin)."""
    sandbox = tmp_path / "tmp"
    sandbox.mkdir()
    junk = sandbox / "junk.bin"
    junk.write_bytes(b"x" * 1000)
    old = time.time() - 30 * 86400
    os.utime(junk, (old, old))
    aged = tmp_path / "aged.json"
    aged.write_text(json.dumps({str(junk): old}))
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    term = Terminal(h, home, env={"TMPDIR": str(sandbox), "HOME": str(tmp_path / "home"),
                                  "HW_PLUGINS": "agedfiles", "HW_AGED_FILES": str(aged)})
    return home, junk, term


def test_customer_approves_a_fix_plan_in_the_terminal(harness: Harness, tmp_path: Path) -> None:
    h = harness
    home, junk, term = _agent_with_old_junk(h, tmp_path)
    try:
        term.expect("connected to wss://")
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        ask = h.spawn("ask", "hw-tech", "--home", str(alice), "consent-request", case,
                      "--scopes", "fix")
        term.expect("allow fix? [y/N]")
        term.type("y")
        assert ask.popen.wait(60) == 0
        fix = h.spawn("fix", "hw-tech", "--home", str(alice), "fix", case, "disk.cleanup",
                      "--json")
        term.expect("apply this fix? [y/N]")
        assert "junk.bin" in term.seen and junk.exists()
        term.type("y")
        assert fix.popen.wait(60) == 0
        report = json.loads(fix.text())["result"]["fix"]
        assert (report["decision"], report["verified"]) == ("approved", True)
        assert not junk.exists()
    finally:
        term.close()


def _status(h: Harness, home: Path) -> dict[str, object]:
    out = h.run("hw-agent", "consent", "status", "--home", str(home), "--json").stdout
    status: dict[str, object] = json.loads(out)
    return status


def test_a_grant_on_the_control_socket_answers_the_prompt_on_screen(harness: Harness) -> None:
    """Bug 1: the prompt is on screen, the customer grants from another terminal: the
    technician gets that grant at once, the prompt stops asking, a late "y" grants nothing."""
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    term = Terminal(h, home)
    try:
        term.expect("connected to wss://")
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        ask = h.spawn("ask", "hw-tech", "--home", str(alice), "consent-request", case,
                      "--scopes", "diagnostics", "--json")
        term.expect("allow diagnostics? [y/N]")
        shown = h.run("hw-agent", "consent", "status", "--home", str(home)).stdout
        assert f"waiting for your answer: alice asks for access to case {case}" in shown
        pending = _status(h, home)["pending"]
        assert isinstance(pending, list) and [p["scopes"] for p in pending] == [["diagnostics"]]
        out = h.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case,
                    "--tech", "alice", "--scopes", "diagnostics", "--for", "20m").stdout
        assert "this answers the request alice is waiting on" in out
        assert ask.popen.wait(60) == 0, ask.text()
        answer = json.loads(ask.text())
        assert answer["granted"] is True and answer["grant"]["via"] == "control"
        assert answer["grant"]["tech_fingerprint"].startswith("SHA256:"), "bound to the key"
        term.expect("answered with hw-agent consent); nothing more to answer here")
        term.type("y")  # the customer answers the old prompt anyway
        grants = _status(h, home)["grants"]
        assert isinstance(grants, list) and len(grants) == 1, "no second grant"
        assert _status(h, home)["pending"] == []
        p = h.run("hw-tech", "--home", str(alice), "diag", case, "--probes", "system",
                  check=False)
        assert p.returncode == 0, p.stderr
        assert len(_status(h, home)["grants"]) == 1  # type: ignore[arg-type]
    finally:
        term.close()


def test_approve_on_the_control_socket_answers_the_fix_prompt_on_screen(
        harness: Harness, tmp_path: Path) -> None:
    """Bug 2: `hw-agent consent approve` while the terminal shows `apply this fix?`."""
    h = harness
    home, junk, term = _agent_with_old_junk(h, tmp_path)
    try:
        term.expect("connected to wss://")
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        h.grant(home, case, "alice", scopes="fix")
        fix = h.spawn("fix", "hw-tech", "--home", str(alice), "fix", case, "disk.cleanup",
                      "--json")
        term.expect("apply this fix? [y/N]")
        shown = h.run("hw-agent", "consent", "status", "--home", str(home)).stdout
        assert f"fix waiting for your approval on case {case}" in shown
        out = h.run("hw-agent", "consent", "approve", "--home", str(home), "--case", case,
                    check=False)
        assert out.returncode == 0, out.stderr
        assert f"approved fix disk.cleanup on case {case}" in out.stdout
        assert fix.popen.wait(60) == 0, fix.text()
        report = json.loads(fix.text())["result"]["fix"]
        assert (report["decision"], report["verified"]) == ("approved", True)
        assert not junk.exists()
        term.expect("approved (answered with hw-agent consent); nothing more to answer here")
        p = h.run("hw-agent", "consent", "decline", "--home", str(home), "--case", case,
                  check=False)
        assert p.returncode == 1 and "no fix is waiting" in p.stderr
    finally:
        term.close()


def test_the_customer_window_shows_our_lines_only(harness: Harness, tmp_path: Path) -> None:
    """Bug 7: no asyncssh chatter or deprecation warnings per SSH command, and no log line
    lands inside a question on screen."""
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    user_home = tmp_path / "customer-home"
    user_home.mkdir()
    term = Terminal(h, home, env={"HOME": str(user_home), "SHELL": "/bin/sh"})
    try:
        term.expect("connected to wss://")
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        h.grant(home, case, "alice", scopes="shell")
        p = h.run("hw-tech", "--home", str(alice), "ssh", case, "--", "echo", "ok")
        assert p.stdout == "ok\n"
        term.expect(f"the remote session of alice on case {case} is closed")
        term.drain()
        shown = term.seen
        assert "technician alice opened a remote session (shell)" in shown
        for noise in ("asyncssh", "CryptographyDeprecationWarning", "SSH connection",
                      "Beginning auth", "Auth for user"):
            assert noise not in shown, f"{noise!r} in the customer's window:\n{shown}"
        # A log line while a question is on screen waits until it is answered.
        ask = h.spawn("ask", "hw-tech", "--home", str(alice), "consent-request", case,
                      "--scopes", "diagnostics")
        term.expect("allow diagnostics? [y/N]")
        refused = h.run("hw-tech", "--home", str(alice), "fix", case, "disk.cleanup",
                        check=False)
        assert refused.returncode == 1 and "no_consent" in refused.stderr
        # The agent logged the refusal before it answered: had it been written, it is here.
        assert "refused fix" not in term.drain(), "a log line inside the question"
        term.type("y")
        assert ask.popen.wait(60) == 0
        term.expect("-> granted diagnostics until ")
        term.expect("refused fix")
    finally:
        term.close()
