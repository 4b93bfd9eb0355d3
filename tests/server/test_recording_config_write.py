"""`ServerConfig.write()` (what `hw-server init` writes) includes the recording quotas, so
an operator finds them in config.toml and a written config reads back the same."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

from server.config import ServerConfig

BIN = Path(sys.executable).parent
RECORDING_SETTINGS = {"recording_bytes_per_hour": 1_000_000, "recordings_per_minute": 7,
                      "recordings_per_tunnel": 3}


def test_the_recording_quotas_are_written_and_read_back(tmp_path: Path) -> None:
    home = tmp_path / "S"
    p = subprocess.run([str(BIN / "hw-server"), "init", "--home", str(home), "--listen",
                        "127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    written = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    defaults = ServerConfig(home=home)
    assert {k: written.get(k) for k in RECORDING_SETTINGS} == \
        {k: getattr(defaults, k) for k in RECORDING_SETTINGS}
    changed = dataclasses.replace(ServerConfig.load(home), **RECORDING_SETTINGS)
    changed.write()
    assert ServerConfig.load(home) == changed
