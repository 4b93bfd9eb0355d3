"""dns.flush: the plan on this machine, and a fake resolvectl."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
from pathlib import Path

import pytest

from plugins.api import FixContext, FixOutcome, FixPlan, NotAvailable
from plugins.fixers import dns_flush, is_admin


def ctx(tmp_path: Path) -> FixContext:
    return FixContext(args={}, workdir=tmp_path)


def test_plan_on_this_machine_is_coherent(tmp_path: Path) -> None:
    try:
        fix_plan = dns_flush.plan(ctx(tmp_path))
    except NotAvailable as exc:
        assert "DNS" in str(exc) or "not installed" in str(exc)
        return
    assert fix_plan.changes and all(line.startswith("run: ") for line in fix_plan.changes)
    assert not fix_plan.reversible
    _, needs_root = dns_flush.commands()
    assert bool(fix_plan.needs_privileges) == (needs_root and not is_admin())


def test_commands_per_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/bin/{name}")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert dns_flush.commands() == ([["/bin/dscacheutil", "-flushcache"],
                                     ["/bin/killall", "-HUP", "mDNSResponder"]], True)
    monkeypatch.setattr(sys, "platform", "win32")
    assert dns_flush.commands() == ([["/bin/ipconfig", "/flushdns"]], False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert dns_flush.commands() == ([["/bin/resolvectl", "flush-caches"]], True)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NotAvailable, match="systemd-resolved"):
        dns_flush.commands()
    monkeypatch.setattr(sys, "platform", "sunos5")
    with pytest.raises(NotAvailable, match="sunos5"):
        dns_flush.commands()


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script resolvectl needs POSIX")
@pytest.mark.parametrize("code", [0, 1])
def test_flush_with_fake_resolvectl(code: int, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    script = bindir / "resolvectl"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\necho denied >&2\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(dns_flush, "is_admin", lambda: False)
    assert "root" in dns_flush.plan(ctx(tmp_path)).needs_privileges
    monkeypatch.setattr(dns_flush, "is_admin", lambda: True)
    fix_plan = dns_flush.plan(ctx(tmp_path))
    assert fix_plan.needs_privileges == "" and fix_plan.changes == ["run: resolvectl flush-caches"]
    assert not log.exists()
    outcome = dns_flush.apply(ctx(tmp_path), fix_plan)
    assert log.read_text() == "flush-caches\n"
    assert outcome.ok is (code == 0)
    if code:
        assert "denied" in outcome.summary


def test_verify_resolves_localhost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = FixPlan("dns.flush", "", "", [], False)
    outcome = FixOutcome(True, "")
    assert dns_flush.verify(ctx(tmp_path), plan, outcome) == ""

    def broken(*args: object, **kwargs: object) -> object:
        raise socket.gaierror("no resolver")

    monkeypatch.setattr(socket, "getaddrinfo", broken)
    assert "localhost does not resolve" in dns_flush.verify(ctx(tmp_path), plan, outcome)
