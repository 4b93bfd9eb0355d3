"""`hw-server contract add/show` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def hw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hw-server"), *args], capture_output=True, text=True,
                          timeout=60)


def test_contract_add_show_and_bad_input(tmp_path: Path) -> None:
    home = str(tmp_path / "S")
    assert hw("init", "--home", home, "--listen", "127.0.0.1:9").returncode == 0
    added = hw("contract", "add", "--home", home, "--customer", "Acme Ltd", "--free-visits",
               "4", "--from", "2026-01-01", "--to", "2026-12-31", "--rate", "500", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["contract_id"] == "CT-0001"
    shown = json.loads(hw("contract", "show", "CT-0001", "--home", home, "--json").stdout)
    assert shown[0]["free_visits"] == {"quota": 4, "used": 0, "remaining": 4}
    backwards = hw("contract", "add", "--home", home, "--customer", "X", "--free-visits", "1",
                   "--from", "2026-02-01", "--to", "2026-01-01")
    assert backwards.returncode == 1 and "before it starts" in backwards.stderr
    bad_date = hw("contract", "add", "--home", home, "--customer", "X", "--free-visits", "1",
                  "--from", "2026-13-01", "--to", "2026-12-31")
    assert bad_date.returncode == 2
    missing = hw("contract", "show", "CT-0404", "--home", home)
    assert missing.returncode == 1 and "no contract CT-0404" in missing.stderr
    assert len(json.loads(hw("contract", "show", "--home", home, "--json").stdout)) == 1
