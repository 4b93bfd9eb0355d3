"""A hostile agent's text cannot drive or mislead the technician's terminal (issue 13,
break 3): `hw-tech ... --json` escapes every control and format character as \\uXXXX (the
JSON still decodes to the exact value) and the tables show them as inert escapes."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.enroll import enroll
from agent.home import AgentHome
from proto.textsafe import is_unsafe
from proto.token import decode_token
from tech.cli import build_parser
from tests.cliwalk import assert_usage_error, check_hostile_text, check_numbers, parse
from tests.harness import Harness

# window title (OSC 0), a C1 CSI clearing the screen, a right-to-left override that makes
# "exe.gpj" read "jpg.exe", a zero-width space
HOSTILE_HOST = "pc\x1b]0;owned\x07\u202eexe.gpj\x9b2J\u200b"
# clear screen, write the clipboard (OSC 52), colour with C1 CSI, a bidi isolate
HOSTILE_DESC = "laptop \x1b[2J\x1b]52;c;Y3VybCBldmlsfHNo\x07 hot \u202eevil\x9b31m\u2066 end"


def raw_unsafe(text: str) -> list[str]:
    return [ch for ch in text if ch != "\n" and is_unsafe(ch)]


@pytest.mark.e2e
def test_hostile_hostname_and_description_are_escaped_in_json_and_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path)
    try:
        h.init_server()
        h.start_server()
        home = AgentHome(tmp_path / "A")
        token = decode_token(h.token(), now=datetime.now(UTC))
        with monkeypatch.context() as patch:  # the one OS reading: the machine's name
            patch.setattr(socket, "gethostname", lambda: HOSTILE_HOST)
            enroll(home, token)
        h.start_agent(home.path)
        case = h.help(home.path, HOSTILE_DESC).splitlines()[0]
        tech = h.add_tech("alice")

        def tech_out(*args: str) -> str:
            out = h.run("hw-tech", "--home", str(tech), *args).stdout
            assert not raw_unsafe(out), f"hw-tech {' '.join(args)} wrote {raw_unsafe(out)!r}"
            return out

        agents = tech_out("agents", "--json")
        assert "\\u009b" in agents and "\\u202e" in agents and "\\u001b" in agents
        assert [a["hostname"] for a in json.loads(agents)] == [HOSTILE_HOST]
        cases = json.loads(tech_out("cases", "--json"))
        assert [c["description"] for c in cases] == [HOSTILE_DESC]
        detail = json.loads(tech_out("case", case, "--json"))
        assert detail["case"]["description"] == HOSTILE_DESC

        assert "pc\\x1b]0;owned\\x07\\u202eexe.gpj\\x9b2J\\u200b" in tech_out("agents")
        assert "laptop \\x1b[2J\\x1b]52;c;" in tech_out("cases")
        shown = tech_out("case", case)
        assert "\\x1b]52;c;Y3VybCBldmlsfHNo\\x07 hot \\u202eevil\\x9b31m\\u2066 end" in shown
    finally:
        h.stop_all()


def test_every_numeric_option_of_hw_tech_is_bounded(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    assert check_numbers(build_parser, capsys) >= 4  # the timeouts at least


def test_typed_text_options_of_hw_tech_refuse_control_characters(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert check_hostile_text(build_parser, capsys, exempt=set()) >= 20


@pytest.mark.parametrize(("argv", "words"), [
    (["consent-request", "HW-20261126-0007", "--scopes", "diagnostics", f"--for={10**30}m"],
     "at most 7 days"),
    (["consent-request", "HW-20261126-0007", "--scopes", "diagnostics", "--for=-1h"],
     "at most 7 days"),
    (["consent-request", "HW-20261126-0007", "--scopes", "diagnostics,root"],
     "unknown scope 'root'"),
    (["fix", "HW-20261126-0007", "disk.cleanup", f"--arg=days={10**30}"], str(2**53)),
    (["escalate", "HW-20261126-0007", "--reason", "x" * 4097], "at most 4096"),
    (["agents", "--customer", "y" * 129], "at most 128"),
    (["book", "TK-20261126-0001", "--slot", "9999-12-31T10:00", "--accepted-by", "phone"],
     "2000 to 2099"),
])
def test_out_of_range_values_are_usage_errors(argv: list[str], words: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = parse(build_parser, argv, capsys)
    assert_usage_error(out, ascii(" ".join(argv)[:60]))
    assert words in out.err


@pytest.mark.e2e
def test_consent_request_says_when_the_customers_policy_capped_it(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    try:
        policy = tmp_path / "policy.toml"
        policy.write_text('max_minutes = 10\npreapproved_scopes = ["diagnostics"]\n')
        h.init_server()
        h.start_server()
        home = h.enroll("A")
        h.start_agent(home, None, "--policy", str(policy))
        case = h.help(home).splitlines()[0]
        alice = h.add_tech("alice")
        out = h.run("hw-tech", "--home", str(alice), "consent-request", case, "--scopes",
                    "diagnostics", "--for", "2h").stdout
        assert "capped: asked for 120 min, granted 10 min" in out
    finally:
        h.stop_all()
