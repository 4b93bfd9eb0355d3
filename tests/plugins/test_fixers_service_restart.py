"""service.restart: unit-name validation, the plan on this machine, and a fake systemctl."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from plugins.api import FixContext, FixPlan, FixRefused, NotAvailable
from plugins.fixers import is_admin, service_restart

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$@" >> "{log}"
case "$*" in
  show*nosuch*) echo LoadState=not-found; echo ActiveState=inactive; echo SubState=dead ;;
  show*) echo LoadState=loaded; echo ActiveState=failed; echo SubState=failed ;;
  *is-active*) echo {state} ;;
  *restart*) exit {restart_code} ;;
esac
"""


def ctx(tmp_path: Path, **args: object) -> FixContext:
    return FixContext(args=args, workdir=tmp_path)


@pytest.mark.parametrize("unit", ["cups", "cups.service", "getty@tty1.service", "a:b_c-d.socket"])
def test_valid_unit_names(unit: str) -> None:
    assert service_restart.unit_name(unit) == unit


@pytest.mark.parametrize("unit", ["foo; rm -rf /", "-H", "--help", "", "a b", "x" * 300,
                                  "$(reboot)", "../etc", None, 5])
def test_invalid_unit_names_are_refused(unit: object, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> tuple[int, str]:
        raise AssertionError("no command may run for an invalid unit")

    monkeypatch.setattr(service_restart, "run_command", never)
    with pytest.raises(FixRefused, match="not a systemd unit name"):
        service_restart.plan(ctx(tmp_path, unit=unit))
    forged = FixPlan("service.restart", "", "", [], False, data={"unit": unit})
    with pytest.raises(FixRefused, match="not a systemd unit name"):
        service_restart.apply(ctx(tmp_path), forged)


def test_plan_on_this_machine_is_coherent(tmp_path: Path) -> None:
    try:
        fix_plan = service_restart.plan(ctx(tmp_path, unit="dbus.service"))
    except (NotAvailable, FixRefused) as exc:
        assert str(exc)  # says why (no systemd, no such unit)
        return
    assert "systemctl --no-ask-password restart -- dbus.service" in fix_plan.changes[0]
    assert not fix_plan.reversible
    assert bool(fix_plan.needs_privileges) == (not is_admin())


@pytest.fixture
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    if sys.platform == "win32":
        pytest.skip("a shell-script systemctl needs POSIX")
    monkeypatch.setattr(sys, "platform", "linux")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"

    def install(state: str = "active", restart_code: int = 0) -> Path:
        script = bindir / "systemctl"
        script.write_text(FAKE_SYSTEMCTL.format(log=log, state=state, restart_code=restart_code))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return log

    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return install


def test_restart_with_fake_systemctl(tmp_path: Path, fake_systemctl: Callable[..., Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_systemctl()
    monkeypatch.setattr(service_restart, "is_admin", lambda: True)
    fix_plan = service_restart.plan(ctx(tmp_path, unit="cups.service"))
    assert fix_plan.needs_privileges == ""
    assert "failed/failed" in fix_plan.summary
    assert "restart" not in log.read_text()  # the plan only asked
    outcome = service_restart.apply(ctx(tmp_path), fix_plan)
    assert outcome.ok, outcome.summary
    assert "--no-ask-password restart -- cups.service" in log.read_text()
    assert service_restart.verify(ctx(tmp_path), fix_plan, outcome) == ""


def test_failed_restart_and_inactive_after(tmp_path: Path, fake_systemctl: Callable[..., Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl(state="failed", restart_code=1)
    monkeypatch.setattr(service_restart, "is_admin", lambda: True)
    fix_plan = service_restart.plan(ctx(tmp_path, unit="cups"))
    assert not service_restart.apply(ctx(tmp_path), fix_plan).ok
    note = service_restart.verify(ctx(tmp_path), fix_plan, None)  # type: ignore[arg-type]
    assert note == "The service cups is failed after the restart."


def test_unknown_unit_and_non_root(tmp_path: Path, fake_systemctl: Callable[..., Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl()
    monkeypatch.setattr(service_restart, "is_admin", lambda: False)
    with pytest.raises(FixRefused, match="no systemd unit 'nosuch'"):
        service_restart.plan(ctx(tmp_path, unit="nosuch"))
    assert "root" in service_restart.plan(ctx(tmp_path, unit="cups")).needs_privileges


def test_not_available_without_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NotAvailable, match=r"systemctl is not installed|needs systemd"):
        service_restart.plan(ctx(tmp_path, unit="cups"))
