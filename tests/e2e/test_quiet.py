"""People see our messages only: no library warnings in what a command prints (bug 7).

The customer's ``hw-agent run`` window is checked on a real terminal in
``test_terminal_prompt.py::test_the_customer_window_shows_our_lines_only``.
"""

from __future__ import annotations

import pytest

from tests.harness import Harness

pytestmark = pytest.mark.e2e

NOISE = ("CryptographyDeprecationWarning", "DeprecationWarning", "asyncssh")


def test_commands_that_load_asyncssh_print_no_library_warnings(harness: Harness) -> None:
    h = harness
    h.init_server()  # makes the SSH host keys: asyncssh is imported
    commands = [
        ("hw-server", "tech", "add", "--home", str(h.server_home), "alice", "--out",
         str(h.root / "T-alice")),
    ]
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home)
    case = h.help(home).splitlines()[0]
    h.grant(home, case, "alice", scopes="shell")
    outputs = [h.run(*cmd) for cmd in commands]
    outputs.append(h.run("hw-tech", "--home", str(h.root / "T-alice"), "ssh", case, "--",
                         "echo", "ok"))
    outputs.append(h.run("hw-server", "init", "--home", str(h.root / "S2"), "--listen",
                         "127.0.0.1:0"))
    assert outputs[1].stdout == "ok\n"
    for p in outputs:
        for noise in NOISE:
            assert noise not in p.stderr + p.stdout, (
                f"{' '.join(p.args)} printed {noise!r}:\n{p.stderr}")
    agent_log = h.procs[-1].text()
    for noise in NOISE:
        assert noise not in agent_log, f"hw-agent run printed {noise!r}:\n{agent_log}"
