"""Server config: defaults, validation with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ServerConfig, parse_listen
from server.errors import ConfigError


@pytest.mark.parametrize(("text", "want"), [("127.0.0.1:8765", ("127.0.0.1", 8765)),
                                            ("[::1]:443", ("::1", 443)),
                                            ("localhost:0", ("localhost", 0))])
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["8765", "host:", ":80", "h:99999", "h:port"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen(text)


def _home(tmp_path: Path, extra: str = "") -> Path:
    for name in ("ca.crt", "server.crt", "server.key", "org.pub"):
        (tmp_path / name).write_text("x")
    ServerConfig(home=tmp_path, listen="[::1]:9000").write()
    if extra:
        with (tmp_path / "config.toml").open("a") as f:
            f.write(extra)
    return tmp_path


def test_round_trip_and_defaults(tmp_path: Path) -> None:
    cfg = ServerConfig.load(_home(tmp_path))
    assert cfg.urls == ["wss://[::1]:9000"]
    assert cfg.db_url.endswith("/store.db") and cfg.db_url.startswith("sqlite+aiosqlite:///")
    assert cfg.handshake_timeout == 10.0


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        ServerConfig.load(_home(tmp_path, 'insecure = true\n'))


def test_missing_home_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hw-server init"):
        ServerConfig.load(tmp_path / "nope")


def test_plain_ws_url_is_refused(tmp_path: Path) -> None:
    home = _home(tmp_path)
    text = (home / "config.toml").read_text().replace("public_urls = []",
                                                      'public_urls = ["ws://x:1"]')
    (home / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match="wss://"):
        ServerConfig.load(home)
