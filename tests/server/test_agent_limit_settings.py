"""The settings of the rogue-agent limits added after review (receipts per minute, calls per
agent, call idle timeout): written by ``init``, read back, refused out of range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.config import ServerConfig
from server.errors import ConfigError
from server.quota import QuotaExceeded, Quotas, check_receipt_rate
from tests.server.test_quota import _home

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_receipt_rate_says_the_limit_and_when_to_retry() -> None:
    q = Quotas(receipts_per_minute=30)
    check_receipt_rate(q, recent=29, oldest_recent=T0, now=T0)
    with pytest.raises(QuotaExceeded) as info:
        check_receipt_rate(q, recent=30, oldest_recent=T0 - timedelta(seconds=42.5), now=T0)
    exc = info.value
    assert (exc.limit, exc.allowed, exc.retry_after) == ("receipts_per_minute", 30, 18.0)
    assert str(exc) == ("consent receipt refused: this computer sent 30 new consent receipts "
                        "in the last minute (the limit is 30 per minute); it was not stored; "
                        "retry in 18 s")


def test_the_new_settings_are_written_with_their_defaults_and_read(tmp_path: Path) -> None:
    text = (_home(tmp_path) / "config.toml").read_text()
    for line in ("agent_receipts_per_minute = 30", "max_calls_per_agent = 4",
                 "call_idle_timeout_s = 60.0"):
        assert f"\n{line}\n" in text
    cfg = ServerConfig.load(_home(tmp_path, agent_receipts_per_minute=5,
                                  max_calls_per_agent=2, call_idle_timeout_s=7.5))
    assert cfg.quotas.receipts_per_minute == 5
    assert (cfg.max_calls_per_agent, cfg.call_idle_timeout_s) == (2, 7.5)


@pytest.mark.parametrize(("key", "value"), [
    ("agent_receipts_per_minute", 0), ("agent_receipts_per_minute", 2.5),
    ("agent_receipts_per_minute", 10**9), ("max_calls_per_agent", 0),
    ("max_calls_per_agent", '"4"'), ("max_calls_per_agent", "true"),
    ("call_idle_timeout_s", 0), ("call_idle_timeout_s", 10**6),
])
def test_bad_values_are_refused_with_their_range(tmp_path: Path, key: str,
                                                 value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{key} must be .* from .* to .*, got .*; see "
                                          r"docs/operations.md#quotas"):
        ServerConfig.load(_home(tmp_path, **{key: value}))
