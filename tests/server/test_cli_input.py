"""Bad input at `hw-server` (issue 13, break 6): a usage error (exit 2) naming the range or
the fix, never a traceback, and nothing written. Every numeric option of every subcommand
is found by walking the parser (tests/cliwalk.py), so options added later are covered."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proto.token import decode_token
from server.cli import build_parser
from server.config import ServerConfig
from server.store import Store
from tests.cliwalk import check_hostile_text, check_numbers, numeric

BIN = Path(sys.executable).parent


def hw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hw-server"), *args], capture_output=True, text=True,
                          timeout=60)


def test_every_numeric_option_is_bounded_and_says_its_range(
        capsys: pytest.CaptureFixture[str]) -> None:
    names = {str(o) for o in numeric(build_parser())}
    # the ones the issue names are among those found
    assert {"contract add --free-visits", "tech add --days", "audit show --limit",
            "field-tech add --capacity", "enroll-token --ttl", "contract add --rate"} <= names
    assert check_numbers(build_parser, capsys) == len(names)


def test_typed_text_options_refuse_control_characters(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert check_hostile_text(build_parser, capsys, exempt=set()) >= 15


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "S")
    assert hw("init", "--home", path, "--listen", "127.0.0.1:9").returncode == 0
    return path


def rows(home: str, table: str) -> int:
    db = sqlite3.connect(Path(home) / "store.db")
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def usage_error(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    for word in words:
        assert word in p.stderr, p.stderr
    assert p.stdout == ""


BIG = str(10**30)


@pytest.mark.parametrize(("args", "words"), [
    (("contract", "add", "--customer", "Acme", "--free-visits", BIG, "--from", "2026-01-01",
      "--to", "2026-12-31"), ("--free-visits", "0-1000")),
    (("contract", "add", "--customer", "Acme", "--free-visits", "1", "--rate", BIG,
      "--from", "2026-01-01", "--to", "2026-12-31"), ("--rate", "0-100000")),
    (("contract", "add", "--customer", "Acme", "--free-visits", "1", "--from", "0001-01-01",
      "--to", "9999-12-31"), ("--from", "2000-01-01")),
    (("audit", "show", "--limit", BIG), ("--limit", "1-10000")),
    (("audit", "show", "--limit", "0"), ("--limit", "1-10000")),
    (("field-tech", "add", "zed", "--base", "成都", "--skills", "hardware-repair",
      "--capacity", BIG), ("--capacity", "1-20")),
    (("field-tech", "add", "zed", "--base", "成都", "--skills", "hardware-repair",
      "--capacity", "-1"), ("--capacity", "1-20")),
    (("field-tech", "add", "z\x1b[2Jed", "--base", "成都", "--skills", "hardware-repair"),
     ("U+001B", "'z\\x1b[2Jed'")),
    (("field-tech", "add", "zed", "--base", "成都", "--skills", "hardwre-repair"),
     ("--skills", "did you mean hardware-repair")),
    (("onsite", "quote", "--customer-kind", "individual", "--city", "成都", "--service",
      "hardware-repiar", "--when", "2026-12-02T10:00"),
     ("--service", "did you mean hardware-repair", "known:")),
    (("onsite", "quote", "--customer-kind", "individual", "--city", "成都", "--service",
      "hardware-repair", "--when", "2026-12-02T10:00", "--hours", "1e30"), ("--hours",)),
    (("enroll-token", "--customer", "x" * 129, "--kind", "individual", "--city", "上海"),
     ("--customer", "129 characters", "at most 128")),
    (("enroll-token", "--customer", " ", "--kind", "individual", "--city", "上海"),
     ("--customer", "must not be empty")),
    (("enroll-token", "--customer", "Li\u202eWei", "--kind", "individual", "--city", "上海"),
     ("U+202E",)),
    (("enroll-token", "--customer", "Li Wei", "--kind", "individual", "--city", "Shangai"),
     ("--city", "did you mean 上海 (Shanghai)")),
    (("enroll-token", "--customer", "Li Wei", "--kind", "individual", "--city", "上海",
      "--ttl", "1e30"), ("--ttl", "720")),
])
def test_bad_input_is_a_usage_error_and_writes_nothing(home: str, args: tuple[str, ...],
                                                       words: tuple[str, ...]) -> None:
    before = {t: rows(home, t) for t in ("contracts", "enroll_tokens", "field_techs",
                                         "audit")}
    usage_error(hw(*args, "--home", home), *words)
    assert {t: rows(home, t) for t in before} == before


def test_technician_days_over_a_year_is_refused_before_any_key_is_written(
        home: str, tmp_path: Path) -> None:
    p = hw("tech", "add", "bob", "--home", home, "--out", str(tmp_path / "T"), "--days", "400")
    usage_error(p, "400 is more than 365", "1-365 days")
    assert not (tmp_path / "T").exists()
    assert hw("tech", "add", "bob", "--home", home, "--out", str(tmp_path / "T"), "--days",
              "365").returncode == 0


def test_init_with_a_control_character_in_a_name_makes_no_home(tmp_path: Path) -> None:
    p = hw("init", "--home", str(tmp_path / "S"), "--name", "a\x1bb")
    usage_error(p, "--name", "'a\\x1bb'")
    assert not (tmp_path / "S").exists()


def test_the_longest_customer_name_makes_a_token_an_agent_accepts(home: str) -> None:
    name = "客" * 128
    p = hw("enroll-token", "--home", home, "--customer", name, "--kind", "individual",
           "--city", "Chengdu")
    assert p.returncode == 0, p.stderr
    assert decode_token(p.stdout.strip(), now=datetime.now(UTC)).customer == name


def test_json_output_escapes_control_and_format_characters(home: str) -> None:
    """An audit entry holding a hostile value (here through the store, as a rogue agent's
    data would arrive) is escaped in `audit show --json` and shown inert in the table."""

    async def add() -> None:
        store = await Store.open(ServerConfig.load(Path(home)).db_url)
        try:
            await store.append_audit(event="test.hostile", actor="agent",
                                     subject="ag-\x9b2J\u202e", now=datetime.now(UTC),
                                     detail={"hostname": "pc\x1b]0;x\x07\u200b"})
        finally:
            await store.close()

    asyncio.run(add())
    p = hw("audit", "show", "--home", home, "--json", "--limit", "1")
    assert p.returncode == 0, p.stderr
    assert not any(ch in p.stdout for ch in "\x9b\u202e\x1b\x07\u200b")
    assert "\\u009b" in p.stdout and "\\u202e" in p.stdout
    entry = json.loads(p.stdout)[0]
    assert entry["subject"] == "ag-\x9b2J\u202e"
    assert entry["detail"]["hostname"] == "pc\x1b]0;x\x07\u200b"
    table = hw("audit", "show", "--home", home, "--limit", "1")
    assert not any(ch in table.stdout for ch in "\x9b\u202e\x1b\x07\u200b")
    assert "ag-\\x9b2J\\u202e" in table.stdout
