"""Built-in fixer ``service.restart``: restart a systemd service (Linux).

Arguments (``FixContext.args``)::

    unit    the systemd unit name (``cups``, ``cups.service``, ``getty@tty1.service``);
            letters, digits and ``:_.@-``, not starting with ``-``

The plan asks systemd (``systemctl show``, read-only) whether the unit exists and its
state; without systemd the fixer is not available. Restarting needs root: a non-root
agent's plan says so in ``needs_privileges``. ``apply`` runs
``systemctl --no-ask-password restart -- UNIT`` (an argument list, never a shell, with a
timeout); ``verify`` runs ``systemctl is-active -- UNIT``. Not reversible.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from typing import Any

from plugins import hookimpl
from plugins.api import FixContext, Fixer, FixOutcome, FixPlan, FixRefused, NotAvailable
from plugins.fixers import current_user, is_admin, run_command

__all__ = ["FINDING_CODES", "NAME", "UNIT_PATTERN", "hw_fixers", "unit_name"]

NAME = "service.restart"
VERSION = "1"
#: This module emits no findings.
FINDING_CODES: tuple[str, ...] = ()
ADDRESSES = frozenset({"services.failed"})
#: A systemd unit name as a technician may give it (no leading '-': never an option).
UNIT_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9:_.@-]{0,254}$")
#: Seconds for a read-only ``systemctl`` query.
QUERY_TIMEOUT_S = 10.0
#: Seconds ``systemctl restart`` may take (it waits for the service to start).
RESTART_TIMEOUT_S = 90.0


def unit_name(value: object) -> str:
    """``value`` if it is a valid unit name, else :class:`FixRefused`."""
    if not isinstance(value, str) or not UNIT_PATTERN.fullmatch(value):
        raise FixRefused(
            f"unit {value!r} is not a systemd unit name (letters, digits and ':_.@-', "
            "at most 255 characters, not starting with '-')"
        )
    return value


def _systemctl() -> str:
    if not sys.platform.startswith("linux"):
        raise NotAvailable(f"restarting a service needs systemd (Linux), not {sys.platform}")
    path = shutil.which("systemctl")
    if path is None:
        raise NotAvailable("systemctl is not installed: this machine does not use systemd")
    return path


def _properties(output: str) -> Mapping[str, str]:
    pairs = (word.split("=", 1) for word in output.split() if "=" in word)
    return {key: value for key, value in pairs}


def plan(ctx: FixContext) -> FixPlan:
    """Check the unit exists and say what restarting it takes; change nothing."""
    unit = unit_name(ctx.args.get("unit"))
    systemctl = _systemctl()
    code, output = run_command(
        [systemctl, "show", "--property=LoadState,ActiveState,SubState", "--", unit],
        QUERY_TIMEOUT_S,
    )
    if code != 0:
        raise NotAvailable(f"systemd cannot be asked about {unit}: {output or f'exit {code}'}")
    state = _properties(output)
    if state.get("LoadState") == "not-found":
        raise FixRefused(f"there is no systemd unit {unit!r} on this machine")
    now = f"{state.get('ActiveState', '?')}/{state.get('SubState', '?')}"
    needs = "" if is_admin() else (
        f"root: restarting a service needs root and the agent runs as {current_user()}"
    )
    return FixPlan(
        fixer=NAME,
        summary=f"Restart the service {unit} (now {now}); programs using it may be "
                "interrupted briefly. This cannot be undone.",
        summary_zh=f"重启服务 {unit}（当前状态 {now}）；使用它的程序可能短暂中断。此操作无法撤销。",
        changes=[f"run: systemctl --no-ask-password restart -- {unit} (now {now})"],
        reversible=False,
        needs_privileges=needs,
        data={"unit": unit, "state_before": now},
    )


def apply(ctx: FixContext, fix_plan: FixPlan) -> FixOutcome:
    """``systemctl restart`` the planned unit."""
    unit = unit_name(fix_plan.data.get("unit"))
    code, output = run_command(
        [_systemctl(), "--no-ask-password", "restart", "--", unit], RESTART_TIMEOUT_S
    )
    details: dict[str, Any] = {"unit": unit, "exit_code": code, "output": output}
    if code != 0:
        return FixOutcome(False, f"systemctl could not restart {unit}: "
                          f"{output or f'exit {code}'}", details)
    return FixOutcome(True, f"Restarted the service {unit}.", details)


def verify(ctx: FixContext, fix_plan: FixPlan, outcome: FixOutcome) -> str:
    """``""`` when ``systemctl is-active`` says the unit is active."""
    unit = unit_name(fix_plan.data.get("unit"))
    _, output = run_command([_systemctl(), "is-active", "--", unit], QUERY_TIMEOUT_S)
    state = output.split()[0] if output.split() else "unknown"
    return "" if state == "active" else f"The service {unit} is {state} after the restart."


FIXER = Fixer(
    name=NAME,
    version=VERSION,
    summary="Restart a systemd service (Linux, needs root)",
    addresses=ADDRESSES,
    plan=plan,
    apply=apply,
    verify=verify,
    platforms=frozenset({"linux"}),
    timeout=RESTART_TIMEOUT_S + 30.0,
)


@hookimpl
def hw_fixers() -> list[Fixer]:
    """The ``service.restart`` fixer."""
    return [FIXER]
