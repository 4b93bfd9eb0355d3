"""process.terminate against child processes the test starts itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from plugins.api import FixContext, FixPlan, FixRefused
from plugins.fixers import process_terminate

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
STUBBORN = [
    sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)",
]


def ctx(tmp_path: Path, **args: object) -> FixContext:
    return FixContext(args=args, workdir=tmp_path)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def start(children: list[subprocess.Popen[bytes]], argv: list[str]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    children.append(child)
    return child


def test_plan_names_the_process(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    child = start(children, SLEEPER)
    name = psutil.Process(child.pid).name()
    fix_plan = process_terminate.plan(ctx(tmp_path, pid=child.pid, name=name))
    assert not fix_plan.reversible
    assert fix_plan.data["pid"] == child.pid and fix_plan.data["name"] == name
    assert f"process {child.pid} '{name}'" in fix_plan.changes[0]
    assert "CPU" in fix_plan.summary and "memory" in fix_plan.summary
    assert fix_plan.needs_privileges == ""  # our own child
    assert child.poll() is None  # the plan changed nothing


def test_terminate_then_verify(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    child = start(children, SLEEPER)
    fix_plan = process_terminate.plan(ctx(tmp_path, pid=child.pid))
    assert process_terminate.verify(ctx(tmp_path), fix_plan, None) != ""  # type: ignore[arg-type]
    outcome = process_terminate.apply(ctx(tmp_path), fix_plan)
    assert outcome.ok, outcome.summary
    assert outcome.details["forced"] is False
    assert child.wait(10) is not None
    assert process_terminate.verify(ctx(tmp_path), fix_plan, outcome) == ""


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGTERM to ignore on Windows")
def test_process_ignoring_sigterm_is_killed_after_grace(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    child = start(children, STUBBORN)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    fix_plan = process_terminate.plan(ctx(tmp_path, pid=child.pid, grace=0.5))
    outcome = process_terminate.apply(ctx(tmp_path), fix_plan)
    assert outcome.ok, outcome.summary
    assert outcome.details["forced"] is True
    assert "killed" in outcome.summary
    assert outcome.details["exit_code"] == -signal.SIGKILL
    assert process_terminate.verify(ctx(tmp_path), fix_plan, outcome) == ""


def test_refuses_init_self_and_parent(tmp_path: Path) -> None:
    for pid, why in ((1, "init"), (os.getpid(), "the agent itself"),
                     (os.getppid(), "parent of the agent")):
        with pytest.raises(FixRefused, match=why):
            process_terminate.plan(ctx(tmp_path, pid=pid))


def test_refuses_bad_arguments(tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    for bad in (None, "123", True, -5, 1.5):
        with pytest.raises(FixRefused, match="pid must be"):
            process_terminate.plan(ctx(tmp_path, pid=bad))
    child = start(children, SLEEPER)
    with pytest.raises(FixRefused, match="not 'firefox'"):
        process_terminate.plan(ctx(tmp_path, pid=child.pid, name="firefox"))
    with pytest.raises(FixRefused, match="grace"):
        process_terminate.plan(ctx(tmp_path, pid=child.pid, grace=0))
    child.kill()
    child.wait()
    with pytest.raises(FixRefused, match="no process"):
        process_terminate.plan(ctx(tmp_path, pid=child.pid))


def test_other_users_process_needs_privileges(
    tmp_path: Path, children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    child = start(children, SLEEPER)
    monkeypatch.setattr(process_terminate, "is_admin", lambda: False)
    monkeypatch.setattr(process_terminate, "_same_user", lambda proc: False)
    fix_plan = process_terminate.plan(ctx(tmp_path, pid=child.pid))
    assert "root" in fix_plan.needs_privileges and str(child.pid) in fix_plan.needs_privileges


def test_pid_reused_or_gone_is_not_touched(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    child = start(children, SLEEPER)
    fix_plan = process_terminate.plan(ctx(tmp_path, pid=child.pid))
    forged = FixPlan(**{**fix_plan.__dict__,
                        "data": {**fix_plan.data, "create_time": fix_plan.data["create_time"] - 1}})
    outcome = process_terminate.apply(ctx(tmp_path), forged)
    assert outcome.ok and outcome.details["already_gone"] is True
    assert child.poll() is None  # a different process (by creation time): left alone
    child.kill()
    child.wait()
    assert process_terminate.apply(ctx(tmp_path), fix_plan).details["already_gone"] is True


def test_tampered_plan_cannot_target_init(tmp_path: Path,
                                          children: list[subprocess.Popen[bytes]]) -> None:
    child = start(children, SLEEPER)
    fix_plan = process_terminate.plan(ctx(tmp_path, pid=child.pid))
    forged = FixPlan(**{**fix_plan.__dict__, "data": {**fix_plan.data, "pid": 1}})
    with pytest.raises(FixRefused, match="init"):
        process_terminate.apply(ctx(tmp_path), forged)
