"""`hw-server recording-key --replace` (server/recordings.py): the new pair is made and
checked before ``recording.pub`` is touched, which is then replaced in one step; a failure
leaves the home as it was and says what to do with the old offline key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proto import sealed

BIN = Path(sys.executable).parent


def hw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hw-server"), *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "S"
    init = hw("init", "--home", str(path), "--listen", "127.0.0.1:9")
    assert init.returncode == 0, init.stderr
    return path


def _files(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*")}


def test_replace_right_after_init_keeps_the_key_and_says_what_to_do(home: Path) -> None:
    pub, key = home / "recording.pub", home / "offline" / "recording.key"
    before, before_key, listing = pub.read_bytes(), key.read_bytes(), _files(home)
    p = hw("recording-key", "--home", str(home), "--replace")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert pub.read_bytes() == before, "recording.pub is kept: recordings stay sealable"
    assert key.read_bytes() == before_key and _files(home) == listing
    assert str(key) in p.stderr and "move it off" in p.stderr and "unchanged" in p.stderr


def test_replace_makes_a_new_pair_once_the_old_offline_key_is_moved(home: Path,
                                                                   tmp_path: Path) -> None:
    pub, key = home / "recording.pub", home / "offline" / "recording.key"
    old_pub = pub.read_bytes()
    key.rename(tmp_path / "old-recording.key")  # to the auditors
    listing = _files(home)
    p = hw("recording-key", "--home", str(home), "--replace")
    assert p.returncode == 0, p.stderr
    new = sealed.load_public(pub.read_bytes())
    assert pub.read_bytes() != old_pub and key.stat().st_mode & 0o777 == 0o600
    assert sealed.key_id(new) in p.stdout
    assert _files(home) == listing | {"offline/recording.key"}, "no temporary file left"


def test_replace_with_a_bad_public_key_file_changes_nothing(home: Path,
                                                           tmp_path: Path) -> None:
    pub = home / "recording.pub"
    before, listing = pub.read_bytes(), _files(home)
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    p = hw("recording-key", "--home", str(home), "--replace", "--pub", str(bad))
    assert p.returncode == 1 and str(bad) in p.stderr, p.stderr
    assert pub.read_bytes() == before and _files(home) == listing
