"""Built-in fixer ``process.terminate``: end a runaway process, gracefully then by force.

Arguments (``FixContext.args``)::

    pid     the process id (required)
    name    optional: the process name the technician expects; the plan is refused when
            the PID now belongs to a process of another name (PID reuse)
    grace   seconds between the polite request (SIGTERM; TerminateProcess on Windows)
            and the forced kill (SIGKILL); default 5, at most 60

Refused: PID 1 (or 0), the agent itself and its ancestors. A process of another user,
when the agent is not root/administrator, makes the plan say ``needs_privileges``.
``apply`` ends the process only if the PID still belongs to the planned process (same
creation time). Not reversible.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psutil

from plugins import hookimpl
from plugins.api import FixContext, Fixer, FixOutcome, FixPlan, FixRefused
from plugins.fixers import current_user, human_size, is_admin

__all__ = ["FINDING_CODES", "NAME", "hw_fixers"]

NAME = "process.terminate"
VERSION = "1"
#: This module emits no findings.
FINDING_CODES: tuple[str, ...] = ()
ADDRESSES = frozenset({"processes.runaway", "processes.memory_hog", "cpu.overloaded", "memory.low"})
DEFAULT_GRACE_S = 5.0
MAX_GRACE_S = 60.0
#: Seconds to wait for the process to disappear after SIGKILL.
KILL_WAIT_S = 5.0
#: Seconds the plan samples the process's CPU use.
CPU_SAMPLE_S = 0.2


def _pid(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise FixRefused(f"pid must be a process id (a non-negative integer), not {value!r}")
    return value


def _grace(args: Mapping[str, Any]) -> float:
    grace = args.get("grace", DEFAULT_GRACE_S)
    if (isinstance(grace, bool) or not isinstance(grace, int | float)
            or not 0 < grace <= MAX_GRACE_S):
        raise FixRefused(f"grace must be a number of seconds in (0, {MAX_GRACE_S:g}]")
    return float(grace)


def _protected() -> dict[int, str]:
    """PIDs that must never be ended, with the reason."""
    protected = {0: "the system's idle process", 1: "the system's init process (PID 1)"}
    protected[os.getpid()] = "the agent itself"
    try:
        for ancestor in psutil.Process().parents():
            protected.setdefault(ancestor.pid, "a parent of the agent")
    except psutil.Error:
        protected.setdefault(os.getppid(), "the agent's parent")
    return protected


def _refuse_protected(pid: int) -> None:
    reason = _protected().get(pid)
    if reason is not None:
        raise FixRefused(f"PID {pid} is {reason}: it is never ended by this fixer")


def _same_user(proc: psutil.Process) -> bool:
    geteuid = getattr(os, "geteuid", None)
    try:
        if geteuid is not None:
            uids = proc.uids()
            return geteuid() in (uids.real, uids.saved)
        return bool(proc.username() == psutil.Process().username())
    except psutil.Error:
        return False


def plan(ctx: FixContext) -> FixPlan:
    """Name the process and what ending it takes; change nothing."""
    pid = _pid(ctx.args.get("pid"))
    grace = _grace(ctx.args)
    _refuse_protected(pid)
    expected = ctx.args.get("name")
    if expected is not None and not isinstance(expected, str):
        raise FixRefused("name must be a string")
    try:
        proc = psutil.Process(pid)
        name = proc.name()
        created = proc.create_time()
        status = proc.status()
    except psutil.NoSuchProcess:
        raise FixRefused(f"there is no process with PID {pid}") from None
    except psutil.AccessDenied:
        raise FixRefused(f"process {pid} cannot be inspected (access denied)") from None
    if expected is not None and expected != name:
        raise FixRefused(
            f"PID {pid} is now {name!r}, not {expected!r} (the process ended and its PID "
            "was reused?): nothing will be ended"
        )
    if status == psutil.STATUS_ZOMBIE:
        raise FixRefused(f"process {pid} ({name}) has already ended (a zombie waiting for "
                         "its parent)")
    try:
        user = proc.username()
    except (psutil.Error, KeyError):
        user = "?"
    try:
        cpu: float | None = proc.cpu_percent(interval=CPU_SAMPLE_S)
    except psutil.Error:
        cpu = None
    try:
        rss: int | None = proc.memory_info().rss
    except psutil.Error:
        rss = None
    needs = ""
    if not is_admin() and not _same_user(proc):
        needs = (f"root (administrator): process {pid} belongs to user {user} and the agent "
                 f"runs as {current_user()}")
    cpu_text = "?" if cpu is None else f"{cpu:.0f}%"
    rss_text = "?" if rss is None else human_size(rss)
    described = f"process {pid} '{name}' of user {user} (CPU {cpu_text}, memory {rss_text})"
    return FixPlan(
        fixer=NAME,
        summary=f"End {described}: ask it to exit, and force it if it is still running "
                f"after {grace:g} s. Unsaved work in it is lost; this cannot be undone.",
        summary_zh=f"结束进程 {pid}“{name}”（用户 {user}，CPU {cpu_text}，内存 {rss_text}）："
                   f"先请求其退出，{grace:g} 秒后仍在运行则强制结束。未保存的数据将丢失，"
                   "此操作无法撤销。",
        changes=[
            f"ask {described} to exit (SIGTERM)",
            f"kill it (SIGKILL) if still running after {grace:g} s",
        ],
        reversible=False,
        needs_privileges=needs,
        data={"pid": pid, "name": name, "create_time": created, "grace": grace, "user": user},
    )


def _planned(fix_plan: FixPlan) -> tuple[int, str, float, float]:
    data = fix_plan.data
    pid = _pid(data.get("pid"))
    _refuse_protected(pid)
    name, created = data.get("name"), data.get("create_time")
    if not isinstance(name, str) or isinstance(created, bool) or not isinstance(
        created, int | float
    ):
        raise FixRefused("the plan does not name the process")
    return pid, name, float(created), _grace(data)


def _same_process(pid: int, created: float) -> psutil.Process | None:
    """The process ``pid`` if it is still the planned one (and not a zombie), else None."""
    try:
        proc = psutil.Process(pid)
        if proc.create_time() != created or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.NoSuchProcess:
        return None


def apply(ctx: FixContext, fix_plan: FixPlan) -> FixOutcome:
    """SIGTERM, wait the grace period, then SIGKILL; only the planned process."""
    pid, name, created, grace = _planned(fix_plan)
    details: dict[str, Any] = {"pid": pid, "name": name, "forced": False}
    proc = _same_process(pid, created)
    if proc is None:
        return FixOutcome(True, f"Process {pid} ({name}) had already ended.",
                          {**details, "already_gone": True})
    try:
        proc.terminate()
        try:
            details["exit_code"] = proc.wait(grace)
        except psutil.TimeoutExpired:
            details["forced"] = True
            proc.kill()
            details["exit_code"] = proc.wait(KILL_WAIT_S)
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied:
        return FixOutcome(False, f"Not permitted to end process {pid} ({name}).", details)
    except psutil.TimeoutExpired:
        return FixOutcome(False, f"Process {pid} ({name}) is still there {KILL_WAIT_S:g} s "
                          "after it was killed (stuck in the kernel?).", details)
    how = f"killed after not exiting within {grace:g} s" if details["forced"] else "exited"
    return FixOutcome(True, f"Process {pid} ({name}) {how}.", details)


def verify(ctx: FixContext, fix_plan: FixPlan, outcome: FixOutcome) -> str:
    """``""`` when the planned process is gone."""
    pid, name, created, _ = _planned(fix_plan)
    if _same_process(pid, created) is None:
        return ""
    return f"Process {pid} ({name}) is still running."


FIXER = Fixer(
    name=NAME,
    version=VERSION,
    summary="End a runaway process: ask it to exit, then force it after a grace period",
    addresses=ADDRESSES,
    plan=plan,
    apply=apply,
    verify=verify,
    timeout=MAX_GRACE_S + KILL_WAIT_S + 15.0,
)


@hookimpl
def hw_fixers() -> list[Fixer]:
    """The ``process.terminate`` fixer."""
    return [FIXER]
