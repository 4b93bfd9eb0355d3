"""`hw-agent consent grant --for`: bad durations exit 2 with a clear message before the agent
is asked; a duration over the local policy's cap is capped and the customer is told."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.consent import parse_duration
from agent.errors import ConsentError
from tests.harness import BIN, Harness


@pytest.mark.parametrize("text", ["1e308m", "99999999999999h", "1e400", "8d", "nan", "inf",
                                  "-5m", "0", "-inf", "10081", "x"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConsentError) as info:
        parse_duration(text)
    assert "give" in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize(("text", "minutes"), [("20m", 20), ("1h", 60), ("90s", 1.5),
                                                ("45", 45), ("10080", 10080)])
def test_good_durations(text: str, minutes: float) -> None:
    assert parse_duration(text) == timedelta(minutes=minutes)


@pytest.mark.parametrize("text", ["1e308m", "99999999999999h", "--for=-5m", "nan"])
def test_the_cli_exits_2_without_a_traceback(text: str) -> None:
    arg = [text] if text.startswith("--") else ["--for", text]
    p = subprocess.run([str(BIN / "hw-agent"), "consent", "grant", "--home", "/nonexistent",
                        "--case", "HW-20261206-0001", "--tech", "alice", "--scopes",
                        "diagnostics", *arg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "argument --for:" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.stop_all()


@pytest.mark.e2e
def test_a_grant_over_the_policy_cap_says_it_was_capped(harness: Harness) -> None:
    h = harness
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home)
    case = h.help(home).splitlines()[0]
    p = h.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case, "--tech",
              "alice", "--scopes", "diagnostics", "--for", "12h", "--json")
    grant = json.loads(p.stdout)
    assert "you asked for 12 h" in p.stderr and "at most 8 h" in p.stderr, p.stderr
    lasts = (datetime.fromisoformat(grant["expires_at"])
             - datetime.fromisoformat(grant["granted_at"]))
    assert lasts == timedelta(hours=8)
    p = h.run("hw-agent", "consent", "grant", "--home", str(home), "--case", case, "--tech",
              "alice", "--scopes", "diagnostics", "--for", "1h")
    assert "note:" not in p.stderr
