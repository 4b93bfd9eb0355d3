"""Run fixers off the event loop, each step under the fixer's timeout, each isolated.

A fix goes ``plan_fix`` (dry run) → the customer's decision → ``apply_fix`` (apply, then
verify) → perhaps ``rollback_fix``; after a restart, ``recover_fix`` says what an apply the
agent's death cut off had done. Every step runs on the probe runner's executor
(:data:`agent.runner.PROBE_EXECUTOR`) with the fixer's ``timeout``, like a probe:

===========================================  ==========================================
the caller or the fixer...                   becomes
===========================================  ==========================================
names no fixer, one not for this platform,   :class:`FixError` (from every function)
or ``rollback_fix`` on a fixer without one
plan raises ``FixRefused``/``NotAvailable``  :class:`FixError` with the fixer's message
plan raises, hangs, returns garbage          :class:`FixError` naming the plugin
apply is handed a plan with                  ``FixOutcome(ok=False)``, not attempted
``needs_privileges`` or of another fixer
apply/rollback raises, hangs, or returns     ``FixOutcome(ok=False)`` saying so
garbage
verify raises, hangs, returns a non-string   a verify note saying so (never ``""``)
a step of a fixer still hung from before     :class:`FixError` / ``ok=False``: no step
                                             of that fixer starts until it ends
===========================================  ==========================================

A hung step goes on running in its daemon thread (it cannot be stopped); the fixer's
later steps are refused until it ends, so the outcome of a hung apply is unknown: the
outcome says so. Concurrent requests for the same fixer are the caller's to serialise.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from agent.runner import (
    PROBE_EXECUTOR,
    _call_impl,
    _describe,
    _Escaped,
    _impls,
    _message,
    _off_loop,
    _StillRunning,
    _Timeout,
)
from plugins.api import FixContext, Fixer, FixOutcome, FixPlan, FixRefused, NotAvailable

from .errors import FixError

__all__ = ["FixError", "apply_fix", "list_fixers", "plan_fix", "recover_fix", "rollback_fix"]

#: The verify note when the fix itself did not succeed.
NOT_VERIFIED = "Not verified: the fix did not succeed."


@dataclass(frozen=True)
class _Entry:
    plugin: str
    fixer: Fixer


# -- public API --------------------------------------------------------------------------


def list_fixers(pm: pluggy.PluginManager) -> list[tuple[str, str, str, list[str]]]:
    """``(name, version, summary, sorted addresses)`` of every fixer, in plugin order.

    Includes fixers for other platforms; leaves out plugins whose ``hw_fixers`` fails and
    later duplicates of a name.
    """
    return [
        (e.fixer.name, e.fixer.version, e.fixer.summary, sorted(e.fixer.addresses))
        for e in _collect(pm).values()
    ]


async def plan_fix(
    pm: pluggy.PluginManager,
    name: str,
    ctx: FixContext,
    *,
    executor: concurrent.futures.Executor | None = None,
) -> FixPlan:
    """The dry run of fixer ``name``: what it would change. Changes nothing.

    Raises:
        FixError: no such fixer here, not for this platform, refused by the fixer
            (``FixRefused``/``NotAvailable``: its message), or the fixer failed, hung or
            returned something else than a plan of its own.
    """
    entry = _find(pm, name)
    try:
        result = await _step(entry, "planning", executor, entry.fixer.plan, ctx)
    except (FixRefused, NotAvailable) as exc:
        raise FixError(_message(exc) or f"{name}: refused") from None
    except _Failed as exc:
        raise FixError(str(exc)) from None
    if not isinstance(result, FixPlan) or result.fixer != name:
        raise FixError(f"{_who(entry)} failed while planning: it returned "
                       f"{_kind(result)}, expected its FixPlan")
    return result


async def apply_fix(
    pm: pluggy.PluginManager,
    name: str,
    ctx: FixContext,
    plan: FixPlan,
    *,
    executor: concurrent.futures.Executor | None = None,
) -> tuple[FixOutcome, str]:
    """Apply ``plan`` with fixer ``name``, then verify: ``(outcome, verify note)``.

    The verify note is ``""`` when the problem is gone, else what remains; when the apply
    failed it is :data:`NOT_VERIFIED`. A plan with ``needs_privileges`` is not applied.

    Raises:
        FixError: no such fixer here, or not for this platform. Everything else (the
            fixer raising, hanging, refusing) is an outcome with ``ok=False``.
    """
    entry = _find(pm, name)
    if not isinstance(plan, FixPlan) or plan.fixer != name:
        fixer = plan.fixer if isinstance(plan, FixPlan) else _kind(plan)
        return FixOutcome(False, f"Not attempted: the plan is for {fixer!r}, not {name!r}."
                          ), NOT_VERIFIED
    if plan.needs_privileges:
        return FixOutcome(False, "Not attempted: the agent lacks privileges: "
                          f"{plan.needs_privileges}"), NOT_VERIFIED
    outcome = await _outcome(entry, "applying", executor, entry.fixer.apply, ctx, plan)
    if not outcome.ok:
        return outcome, NOT_VERIFIED
    try:
        note = await _step(entry, "verifying", executor, entry.fixer.verify, ctx, plan, outcome)
    except _Failed as exc:
        return outcome, f"Not verified: {exc}"
    except Exception as exc:  # FixRefused & co. raised by verify
        return outcome, f"Not verified: {_who(entry)} failed while verifying: {_describe(exc)}"
    if not isinstance(note, str):
        return outcome, (f"Not verified: {_who(entry)} returned {_kind(note)} from verify, "
                         "expected a string")
    return outcome, note


async def rollback_fix(
    pm: pluggy.PluginManager,
    name: str,
    ctx: FixContext,
    outcome: FixOutcome,
    *,
    executor: concurrent.futures.Executor | None = None,
) -> FixOutcome:
    """Undo an applied fix from its outcome's ``undo``.

    Raises:
        FixError: no such fixer here, not for this platform, the fixer is not
            reversible, or the outcome has nothing to undo. The fixer failing is an
            outcome with ``ok=False``.
    """
    entry = _find(pm, name)
    rollback = entry.fixer.rollback
    if rollback is None:
        raise FixError(f"the fixer {name} cannot be undone")
    if not isinstance(outcome, FixOutcome) or outcome.undo is None:
        raise FixError(f"nothing to undo: the outcome of {name} carries no undo data")
    return await _outcome(entry, "rolling back", executor, rollback, ctx, outcome)


async def recover_fix(
    pm: pluggy.PluginManager,
    name: str,
    ctx: FixContext,
    plan: FixPlan,
    *,
    executor: concurrent.futures.Executor | None = None,
) -> FixOutcome:
    """What an ``apply`` of ``plan`` that the agent's death cut off had done (the fixer's
    ``recover``, from its journal). Never raises: a fixer without ``recover``, one no
    longer installed, or one that fails gives an outcome saying the result is unknown."""
    unknown = f"The result is unknown: the fixer {name} keeps no journal of its changes"
    try:
        entry = _find(pm, name)
    except FixError as exc:
        return FixOutcome(False, f"The result is unknown: {exc}.")
    if entry.fixer.recover is None:
        return FixOutcome(False, unknown + "; check the computer by hand.")
    return await _outcome(entry, "recovering", executor, entry.fixer.recover, ctx, plan)


# -- internals ---------------------------------------------------------------------------


class _Failed(Exception):
    """A step raised (not a refusal), hung, or is still hung; the message says so."""


def _collect(pm: pluggy.PluginManager) -> dict[str, _Entry]:
    found: dict[str, _Entry] = {}
    for impl in _impls(pm.hook.hw_fixers):
        try:
            result = _call_impl(impl)
        except Exception:
            continue
        if not isinstance(result, list | tuple):
            continue
        for item in result:
            if isinstance(item, Fixer) and item.name not in found:
                found[item.name] = _Entry(impl.plugin_name, item)
    return found


def _find(pm: pluggy.PluginManager, name: str) -> _Entry:
    entry = _collect(pm).get(name) if isinstance(name, str) else None
    if entry is None:
        raise FixError(f"no fixer named {name!r} on this agent")
    if not entry.fixer.runs_on(sys.platform):
        raise FixError(f"the fixer {name} does not run on {sys.platform}")
    return entry


def _who(entry: _Entry) -> str:
    return f"the fixer {entry.fixer.name} (plugin {entry.plugin})"


def _kind(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a fixer step; a SystemExit & co. must not escape into the event loop."""
    try:
        return fn(*args)
    except Exception:
        raise
    except BaseException as exc:
        raise _Escaped(f"{type(exc).__name__} raised in the fixer") from None


async def _step(
    entry: _Entry,
    stage: str,
    executor: concurrent.futures.Executor | None,
    fn: Callable[..., Any],
    *args: Any,
) -> Any:
    """Run one step off the loop. Raises FixRefused/NotAvailable as the fixer did, or
    :class:`_Failed` for anything else that went wrong."""
    pool = PROBE_EXECUTOR if executor is None else executor
    timeout = entry.fixer.timeout
    try:
        return await _off_loop(pool, f"fix:{entry.fixer.name}", timeout, _guarded, fn, *args)
    except _Timeout:
        raise _Failed(f"{_who(entry)} did not finish {stage} within {timeout:g} s") from None
    except _StillRunning:
        raise _Failed(f"{_who(entry)} is still running a step that timed out earlier; "
                      "try again when it has finished") from None
    except (FixRefused, NotAvailable):
        raise
    except Exception as exc:
        raise _Failed(f"{_who(entry)} failed while {stage}: {_describe(exc)}") from None


async def _outcome(
    entry: _Entry,
    stage: str,
    executor: concurrent.futures.Executor | None,
    fn: Callable[..., Any],
    *args: Any,
) -> FixOutcome:
    try:
        result = await _step(entry, stage, executor, fn, *args)
    except (FixRefused, NotAvailable) as exc:
        return FixOutcome(False, f"Refused by {_who(entry)}: {_message(exc)}")
    except _Failed as exc:
        summary = str(exc)
        if "did not finish" in summary:
            summary += "; it may still be running, so the result is unknown"
        return FixOutcome(False, summary[:1].upper() + summary[1:] + ".")
    if not isinstance(result, FixOutcome):
        return FixOutcome(False, f"{_who(entry)} returned {_kind(result)} while {stage}, "
                          "expected a FixOutcome.")
    return result
