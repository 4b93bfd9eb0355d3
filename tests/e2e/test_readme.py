"""README.md's "Step by step", run as written: every shell line of its blocks, in order.

Real processes, as a person following the README would start them, in a scratch directory
that holds the homes (``S``, ``A``, ``T``) and a ``.venv`` link to this test's environment
(the README is followed from a checkout, where ``.venv`` is what ``make demo`` built). The
commands are *not* on the PATH until the README's ``. .venv/bin/activate`` line: the test
runs that line and uses the PATH it sets for the lines after it (each line is its own
shell). What the test adds, and why:

- ``<TOKEN>``, ``<CASE>``, ``<TICKET>`` are taken from the earlier outputs that print them
  (the enrollment token line, the case number, the ticket number).
- ``127.0.0.1:8765`` becomes a free port (tests run beside other servers on this machine).
- ``hw-server run`` and ``hw-agent run`` run in the background (the README gives each its own
  terminal) until they say they are listening / connected.
- A line whose comment says it "waits for the customer" runs in the background; the test
  waits until the customer can see the request (``hw-agent consent status`` says "waiting
  for your answer" or "fix waiting for your approval"), runs the
  customer's next line as written, and then requires the waiting line to succeed.
- The agent gets its own ``TMPDIR`` and ``XDG_CACHE_HOME`` (scratch directories), so the
  README's ``disk.cleanup`` cleans those, not this machine's ``/tmp``. Its ``TMPDIR`` holds
  ``old.log``, 30 days old (``os.utime``; its inode-change time, which no call can age, as
  the test plugin ``agedfiles`` reports it, loaded with ``HW_PLUGINS``), and ``new.log``
  written just now: the plan must offer to move the first, never the second.
- Skipped, with the reason: the interactive ``hw-tech ssh <CASE>`` (needs a terminal; the
  line before it runs the same path with a command) and the ``>> ~/.ssh/config`` append
  (must not change the user's SSH config; ``hw-tech ssh-config`` itself is run).
- After some lines the test checks what the README's comment claims (the fix plan, three
  slots, the confirmation the sign-off waits for, mean satisfaction in the report); each
  claim must have been checked (a reworded README line must not silently check nothing).
- "Command not found" before the activation line is checked with ``PATH`` cut down to the
  system directories (``/usr/bin:/bin``): whoever also did ``pipx install .`` has the
  commands on their own PATH.

The ``make demo`` / ``make test`` block at the top is not run: building the environment is
what runs this test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import free_port, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
PLACEHOLDER = re.compile(r"<(TOKEN|CASE|TICKET)>")
CASE_RE = re.compile(r"\bHW-[0-9]{8}-[0-9]{4,6}\b")
TICKET_RE = re.compile(r"\bTK-[0-9]{8}-[0-9]{4,6}\b")
README_PORT = "127.0.0.1:8765"
SYSTEM_PATH = "/usr/bin:/bin"
#: What :func:`check_claim` checks; every one must be checked by the walk.
CLAIMS = frozenset({"plan moves old files only", "fix applied", "three slots",
                    "sign-off awaits confirmation", "customer sees the sign-off",
                    "china time", "mean satisfaction"})


def walk_lines(text: str) -> list[tuple[str, str]]:
    """``(command, comment)`` of every shell line in the "Step by step" section."""
    section = text.split("\n## Step by step\n", 1)[1].split("\n## ", 1)[0]
    lines: list[tuple[str, str]] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for raw in block.splitlines():
            if not raw.strip():
                continue
            at = comment_start(raw)
            lines.append((raw[:at].strip(), raw[at + 1:].strip() if at < len(raw) else ""))
    return lines


def comment_start(line: str) -> int:
    """Where a shell comment starts (a ``#`` after a blank, outside quotes), else len."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return i
    return len(line)


@dataclass
class Walk:
    cwd: Path
    env: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    agent_tmp: Path | None = None
    checked: set[str] = field(default_factory=set)

    def expand(self, command: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            assert name in self.values, f"the README uses <{name}> before any output gave it"
            return self.values[name]

        return PLACEHOLDER.sub(value, command).replace(README_PORT, self.env["HW_TEST_LISTEN"])

    def learn(self, command: str, out: str) -> None:
        if "enroll-token" in command:
            self.values["TOKEN"] = out.strip().splitlines()[0]
        for name, pattern in (("CASE", CASE_RE), ("TICKET", TICKET_RE)):
            found = pattern.search(out)
            if found and name not in self.values:
                self.values[name] = found.group(0)

    def run(self, command: str, *, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=self.cwd, env=env or self.env,
                              capture_output=True, text=True, timeout=180)

    def must(self, command: str) -> str:
        done = self.run(command)
        assert done.returncode == 0, (f"README line failed ({done.returncode}): {command}\n"
                                      f"{done.stdout}\n{done.stderr}\n{self.tail()}")
        return done.stdout

    def start(self, command: str, name: str, env: dict[str, str] | None = None
              ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.cwd / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(["bash", "-c", command], cwd=self.cwd,
                                    env=env or self.env, stdin=subprocess.DEVNULL,
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own group: stop() ends it
        self.background.append(proc)
        self.logs.append(log)
        return proc, log

    def wait_log(self, proc: subprocess.Popen[bytes], log: Path, pattern: str) -> None:
        def seen() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            return re.search(pattern, log.read_text(errors="replace")) is not None

        wait_until(seen, timeout=60, what=f"{pattern!r} in {log.name}")

    def customer_sees_a_request(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        def seen() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the waiting line exited {proc.returncode} before the "
                                     f"customer saw it:\n{log.read_text()}\n{self.tail()}")
            done = self.run("hw-agent consent status --home A")  # what the customer reads
            return done.returncode == 0 and "waiting for your" in done.stdout

        wait_until(seen, timeout=60, what="the request to reach the customer")

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                         for log in self.logs)

    def stop(self) -> None:
        for proc in reversed(self.background):  # the groups started here, by their id
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(15)
                    break
                except subprocess.TimeoutExpired:
                    continue


def test_walk_lines_reads_commands_and_comments() -> None:
    text = ("intro\n## Step by step\n```sh\nhw-a x \"a # b\"   # note\n\nhw-b\n```\n"
            "## Next\n```sh\nnot-run\n```\n")
    assert walk_lines(text) == [('hw-a x "a # b"', "note"), ("hw-b", "")]


def test_the_readme_step_by_step_runs_as_written(tmp_path: Path) -> None:
    lines = walk_lines(README.read_text(encoding="utf-8"))
    assert lines and lines[0][0] == ". .venv/bin/activate"
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("HW_")}
    base.pop("VIRTUAL_ENV", None)
    base["PATH"] = os.pathsep.join(p for p in base.get("PATH", "").split(os.pathsep)
                                   if p and Path(p).resolve() != VENV_BIN.resolve())
    base["PYTHONUNBUFFERED"] = "1"
    base["HW_TEST_LISTEN"] = f"127.0.0.1:{free_port()}"
    walk = Walk(tmp_path, base, agent_tmp=tmp_path / "agent-tmp")
    agent_env: dict[str, str | Path] = {
        "TMPDIR": tmp_path / "agent-tmp", "XDG_CACHE_HOME": tmp_path / "cache",
        "HW_PLUGINS": "agedfiles", "HW_AGED_FILES": tmp_path / "aged.json",
        "PYTHONPATH": Path(__file__).resolve().parent}
    for d in (tmp_path / "agent-tmp", tmp_path / "cache"):
        d.mkdir()
    old_log, old = tmp_path / "agent-tmp" / "old.log", time.time() - 30 * 86400
    old_log.write_text("x" * 4096)
    os.utime(old_log, (old, old))
    (tmp_path / "aged.json").write_text(json.dumps({str(old_log): old}))
    (tmp_path / "agent-tmp" / "new.log").write_text("y" * 4096)  # young: never moved
    try:
        # without the README's activation the commands are not found (the bug it fixes);
        # with the system's PATH only: a `pipx install .` elsewhere does not count
        assert walk.run("hw-server --help",
                        env={**walk.env, "PATH": SYSTEM_PATH}).returncode == 127
        waiting: tuple[str, subprocess.Popen[bytes], Path] | None = None
        for command, comment in lines:
            if command == ". .venv/bin/activate":
                shown = walk.must(". .venv/bin/activate && printf '%s' \"$PATH\"")
                walk.env = {**walk.env, "PATH": shown, "VIRTUAL_ENV": str(tmp_path / ".venv")}
                assert walk.must("command -v hw-server hw-agent hw-tech").count("\n") == 3
                continue
            if re.fullmatch(r"hw-tech --home T ssh <CASE>", command):
                continue  # interactive: needs a terminal (the line before ran a command)
            if ">> ~/.ssh/config" in command:
                command = command.split(">>", 1)[0].strip()  # never append to ~/.ssh/config
                assert "Host hw-" in walk.must(walk.expand(command))
                continue
            expanded = walk.expand(command)
            if re.search(r"\bhw-server run\b", command):
                proc, log = walk.start(expanded, "server")
                walk.wait_log(proc, log, r"listening on wss://")
                continue
            if re.search(r"\bhw-agent run\b", command):
                env = {**walk.env, **{k: str(v) for k, v in agent_env.items()}}
                proc, log = walk.start(expanded, "agent", env)
                walk.wait_log(proc, log, r"connected to wss://")
                continue
            if "waits for the customer" in comment:
                assert waiting is None, "two README lines wait for the customer at once"
                proc, log = walk.start(expanded, f"waiting-{len(walk.logs)}")
                waiting = (command, proc, log)
                walk.customer_sees_a_request(proc, log)
                continue
            out = walk.must(expanded)
            walk.learn(command, out)
            if waiting is not None:  # the customer answered: the waiting line succeeds
                wcommand, proc, log = waiting
                assert proc.wait(120) == 0, (f"README line failed ({proc.returncode}): "
                                             f"{wcommand}\n{log.read_text()}")
                walk.learn(wcommand, log.read_text())
                waiting = None
            check_claim(walk, command, out)
        assert waiting is None
        assert {"TOKEN", "CASE", "TICKET"} <= set(walk.values)
        assert walk.checked == CLAIMS, f"README claims not checked: {CLAIMS - walk.checked}"
    finally:
        walk.stop()


def check_claim(walk: Walk, command: str, out: str) -> None:
    """What the README's comment on a line says, checked (recorded in ``walk.checked``)."""
    assert walk.agent_tmp is not None
    if command == "hw-tech --home T fix <CASE> disk.cleanup --dry-run":  # "the plan"
        assert "old.log" in out and "new.log" not in out, out
        assert (walk.agent_tmp / "old.log").exists(), "a dry run changes nothing"
        walk.checked.add("plan moves old files only")
    if command == "hw-agent consent approve --home A --case <CASE>":  # "approves the plan"
        assert not (walk.agent_tmp / "old.log").exists(), "the approved plan was not applied"
        assert (walk.agent_tmp / "new.log").exists()
        walk.checked.add("fix applied")
    if command == "hw-tech --home T tickets":  # "the ticket, its quote and three slots"
        tickets = json.loads(walk.must("hw-tech --home T tickets --json"))
        assert len(tickets) == 1 and len(tickets[0]["slots"]) == 3, tickets
        assert tickets[0]["total"] is not None and walk.values["TICKET"] in out
        walk.checked.add("three slots")
    if command.startswith("hw-tech --home T ticket signoff"):
        assert "awaiting the customer's signed confirmation" in out
        walk.checked.add("sign-off awaits confirmation")
    if command == "hw-agent visit show --home A <TICKET>" and "sign-off" in out:
        assert "waiting for your signed confirmation" in out
        walk.checked.add("customer sees the sign-off")
    if command == "hw-agent visit show --home A <TICKET>":
        assert "+08:00" in out  # China time, offset shown
        walk.checked.add("china time")
    if command == "hw-server report --home S":
        assert "mean satisfaction: 5.00/5" in out
        walk.checked.add("mean satisfaction")
