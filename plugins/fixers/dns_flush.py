"""Built-in fixer ``dns.flush``: flush the operating system's DNS cache.

==========  =====================================================  ====================
platform    commands (argument lists, never a shell)               privileges
==========  =====================================================  ====================
Linux       ``resolvectl flush-caches`` (systemd-resolved; or the  root
            older ``systemd-resolve --flush-caches``)
macOS       ``dscacheutil -flushcache``, ``killall -HUP            root
            mDNSResponder``
Windows     ``ipconfig /flushdns``                                 none
==========  =====================================================  ====================

A Linux machine without systemd-resolved keeps no system DNS cache (glibc caches
nothing): the fixer is not available there. ``verify`` checks that ``localhost`` still
resolves. Not reversible (and nothing to undo).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from typing import Any

from plugins import hookimpl
from plugins.api import FixContext, Fixer, FixOutcome, FixPlan, NotAvailable
from plugins.fixers import current_user, is_admin, run_command

__all__ = ["FINDING_CODES", "NAME", "commands", "hw_fixers"]

NAME = "dns.flush"
VERSION = "1"
#: This module emits no findings.
FINDING_CODES: tuple[str, ...] = ()
ADDRESSES = frozenset({"network.dns_failed"})
#: Seconds each command may take.
COMMAND_TIMEOUT_S = 20.0


def _which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise NotAvailable(f"{name} is not installed on this machine")
    return path


def commands() -> tuple[list[list[str]], bool]:
    """The commands that flush this machine's DNS cache, and whether they need root.

    Raises:
        NotAvailable: this machine has no DNS cache the agent knows how to flush.
    """
    if sys.platform == "win32":
        return [[_which("ipconfig"), "/flushdns"]], False
    if sys.platform == "darwin":
        return [[_which("dscacheutil"), "-flushcache"],
                [_which("killall"), "-HUP", "mDNSResponder"]], True
    if sys.platform.startswith("linux"):
        for name, flag in (("resolvectl", "flush-caches"), ("systemd-resolve", "--flush-caches")):
            path = shutil.which(name)
            if path is not None:
                return [[path, flag]], True
        raise NotAvailable(
            "this machine does not run systemd-resolved (no resolvectl), so it keeps no "
            "system DNS cache to flush"
        )
    raise NotAvailable(f"flushing the DNS cache is not supported on {sys.platform}")


def _shown(argv: list[str]) -> str:
    return " ".join([os.path.basename(argv[0]), *argv[1:]])


def plan(ctx: FixContext) -> FixPlan:
    """Name the commands and whether they need privileges; change nothing."""
    argvs, needs_root = commands()
    shown = [_shown(argv) for argv in argvs]
    needs = ""
    if needs_root and not is_admin():
        needs = f"root: {shown[0]} needs root and the agent runs as {current_user()}"
    return FixPlan(
        fixer=NAME,
        summary="Flush the DNS cache so that names are looked up afresh "
                f"(runs: {'; '.join(shown)}). Harmless; nothing to undo.",
        summary_zh=f"清除 DNS 缓存，使域名重新解析（执行：{'；'.join(shown)}）。"
                   "无副作用，无需撤销。",
        changes=[f"run: {line}" for line in shown],
        reversible=False,
        needs_privileges=needs,
        data={"commands": shown},
    )


def apply(ctx: FixContext, fix_plan: FixPlan) -> FixOutcome:
    """Run the flush commands of this platform (recomputed, not taken from the plan)."""
    argvs, _ = commands()
    results: list[dict[str, Any]] = []
    for argv in argvs:
        code, output = run_command(argv, COMMAND_TIMEOUT_S)
        results.append({"command": _shown(argv), "exit_code": code, "output": output})
        if code != 0:
            return FixOutcome(False, f"{_shown(argv)} failed: {output or f'exit {code}'}",
                              {"commands": results})
    return FixOutcome(True, "Flushed the DNS cache.", {"commands": results})


def verify(ctx: FixContext, fix_plan: FixPlan, outcome: FixOutcome) -> str:
    """``""`` when ``localhost`` resolves."""
    try:
        socket.getaddrinfo("localhost", None)
    except OSError as exc:
        return f"Name lookups fail after the flush: localhost does not resolve ({exc})."
    return ""


FIXER = Fixer(
    name=NAME,
    version=VERSION,
    summary="Flush the operating system's DNS cache",
    addresses=ADDRESSES,
    plan=plan,
    apply=apply,
    verify=verify,
    platforms=frozenset({"linux", "darwin", "win32"}),
    timeout=2 * COMMAND_TIMEOUT_S + 10.0,
)


@hookimpl
def hw_fixers() -> list[Fixer]:
    """The ``dns.flush`` fixer."""
    return [FIXER]
