"""Bad input at `hw-agent` (issue 13, break 6): a usage error (exit 2) stating the range or
the fix, never a traceback; every numeric option found by walking the parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import build_parser
from tests.cliwalk import assert_usage_error, check_hostile_text, check_numbers, parse

BIN = Path(sys.executable).parent


def test_every_numeric_option_of_hw_agent_is_bounded(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert check_numbers(build_parser, capsys) >= 3  # --retry-min, --retry-max, --slot


def test_typed_text_options_of_hw_agent_refuse_control_characters(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert check_hostile_text(build_parser, capsys, exempt=set()) >= 8


@pytest.mark.parametrize(("argv", "words"), [
    (["visit", "accept", "TK-20261126-0001", f"--slot={10**30}"], "1-3"),
    (["visit", "accept", "TK-20261126-0001\x1b[2J", "--slot=1"], "'TK-20261126-0001\\x1b[2J'"),
    (["visit", "decline", "TK-20261126-0001", "--note", "n" * 4097], "at most 4096"),
    (["consent", "revoke", "--case", "x" * 1000], "is not a case number"),
    (["consent", "approve", "--case", "HW-20261126-0007\u202e"], "is not a case number"),
])
def test_out_of_range_values_are_usage_errors(argv: list[str], words: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = parse(build_parser, argv, capsys)
    assert_usage_error(out, ascii(" ".join(argv)[:60]))
    assert words in out.err


@pytest.mark.parametrize("value", ["1e308", "inf", "0", str(10**30)])
def test_run_refuses_an_unbounded_reconnect_delay_before_starting(
        tmp_path: Path, value: str) -> None:
    """Before: `hw-agent run --retry-min 1e308` started and would wait ~forever between
    reconnects; now it is refused at once, with the range."""
    p = subprocess.run([str(BIN / "hw-agent"), "run", "--home", str(tmp_path / "A"),
                        "--retry-min", value], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "more than 0 up to 600 seconds" in p.stderr
    assert not (tmp_path / "A").exists()
