"""Per-agent quotas: the pure decisions, the refusal log (audit once per interval, retries
answered from memory) and their settings in config.toml."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.config import ServerConfig
from server.errors import ConfigError
from server.quota import (
    RECHECK_S,
    QuotaExceeded,
    Quotas,
    RefusalLog,
    check_case_open,
    check_result_size,
)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
Q = Quotas(open_cases=20, cases_per_minute=10, result_bytes=1000, audit_interval_s=60)


def test_case_open_within_the_limits_passes() -> None:
    check_case_open(Q, waiting=19, recent=9, oldest_recent=T0, now=T0)


def test_too_many_waiting_cases_says_which_limit_and_when() -> None:
    with pytest.raises(QuotaExceeded) as info:
        check_case_open(Q, waiting=20, recent=0, oldest_recent=None, now=T0)
    exc = info.value
    assert (exc.limit, exc.allowed, exc.retry_after) == ("open_cases", 20, None)
    assert str(exc) == ("case refused: this computer already has 20 cases waiting for a "
                        "technician (the limit is 20 per computer); retry once HelloWord "
                        "support has taken one of them up")


def test_too_many_cases_a_minute_says_when_to_retry() -> None:
    with pytest.raises(QuotaExceeded) as info:
        check_case_open(Q, waiting=0, recent=10, oldest_recent=T0 - timedelta(seconds=45.5),
                        now=T0)
    exc = info.value
    assert (exc.limit, exc.retry_after) == ("cases_per_minute", 15.0)
    assert str(exc).endswith("(the limit is 10 per minute); retry in 15 s")


def test_result_size_bound() -> None:
    check_result_size(Q, result_id="rs-1", size=1000)
    with pytest.raises(QuotaExceeded, match=r"result rs-1 is 1001 bytes, over the server's "
                                            r"limit of 1000 bytes per result; it was not "
                                            r"stored") as info:
        check_result_size(Q, result_id="rs-1", size=1001)
    assert info.value.limit == "result_bytes"


def test_refusals_are_audited_once_per_interval_with_the_count() -> None:
    log = RefusalLog(interval=60)
    assert log.note(("ag-1", "open_cases"), 0.0) == 1
    assert [log.note(("ag-1", "open_cases"), t) for t in (1.0, 2.0, 59.0)] == [None] * 3
    assert log.note(("ag-2", "open_cases"), 3.0) == 1  # each agent on its own
    assert log.note(("ag-1", "result_bytes"), 4.0) == 1  # each limit on its own
    assert log.note(("ag-1", "open_cases"), 60.0) == 4  # this one and the three since
    assert log.note(("ag-1", "open_cases"), 61.0) is None


def test_a_held_refusal_is_answered_from_memory_until_its_retry_time() -> None:
    log = RefusalLog(interval=60)
    key = ("ag-1", "open_case")
    rate = QuotaExceeded("cases_per_minute", "case refused: too many", allowed=10,
                         retry_after=30.0)
    assert log.held(key, 0.0) is None
    log.hold(key, rate, 100.0)
    again = log.held(key, 110.0)
    assert again is not None and again.retry_after == 20.0 and str(again).endswith(
        "retry in 20 s")
    assert log.held(key, 130.0) is None
    waiting = QuotaExceeded("open_cases", "case refused: waiting", allowed=20, then="later")
    log.hold(key, waiting, 200.0)
    assert log.held(key, 200.0 + RECHECK_S - 0.1) is waiting
    assert log.held(key, 200.0 + RECHECK_S) is None  # the store is asked again


def test_the_refusal_log_stays_bounded() -> None:
    log = RefusalLog(interval=60, max_entries=100)
    for i in range(1000):
        log.note((f"ag-{i}", "open_cases"), float(i))
        assert len(log._seen) <= 100


# ----------------------------------------------------------------------- config.toml


def _home(tmp_path: Path, **settings: object) -> Path:
    for name in ("ca.crt", "server.crt", "server.key", "org.pub"):
        (tmp_path / name).write_text("x")
    ServerConfig(home=tmp_path).write()
    cfg = tmp_path / "config.toml"
    text = cfg.read_text()
    for key, value in settings.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, f"{key} is not written by init"
    cfg.write_text(text)
    return tmp_path


def test_quota_defaults_are_written_and_read_back(tmp_path: Path) -> None:
    cfg = ServerConfig.load(_home(tmp_path))
    assert cfg.quotas == Quotas()
    assert Quotas() == Quotas(open_cases=20, cases_per_minute=10, result_bytes=48 * 1024,
                              audit_interval_s=60.0)


def test_quota_settings_are_read(tmp_path: Path) -> None:
    cfg = ServerConfig.load(_home(tmp_path, agent_open_cases=3, agent_cases_per_minute=2,
                                  result_max_bytes=4096, quota_audit_interval_s=5))
    assert cfg.quotas == Quotas(open_cases=3, cases_per_minute=2, result_bytes=4096,
                                audit_interval_s=5.0)


@pytest.mark.parametrize(("key", "value"), [
    ("agent_open_cases", 0), ("agent_open_cases", -5), ("agent_open_cases", 2.5),
    ("agent_open_cases", '"20"'), ("agent_open_cases", "true"),
    ("agent_cases_per_minute", 10**9), ("result_max_bytes", 10), ("result_max_bytes", 2**21),
    ("quota_audit_interval_s", 0),
])
def test_bad_quota_settings_are_refused_with_their_range(
        tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{key} must be .* from .* to .*, got .*; see "
                                          r"docs/operations.md#quotas"):
        ServerConfig.load(_home(tmp_path, **{key: value}))
