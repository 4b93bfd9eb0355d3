"""``hw-agent fixes``: the fixes applied on this computer, and undoing one.

The agent records every fix in ``agent.db`` before applying it (:mod:`agent.localstore`),
including fixes cut off when the agent was killed (reported as interrupted when it
restarts). ``undo`` runs the fixer's ``rollback`` with the recorded undo data: for
``disk.cleanup``, the quarantined files go back where they were.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from plugins.api import FixContext, FixOutcome
from proto.argtypes import name_arg
from proto.textsafe import safe_json_dumps
from proto.timefmt import human_time

from .cliargs import _home, _run, out
from .errors import AgentError, FixError
from .localstore import FIX_UNDONE, FixRecord, LocalStore

#: argparse type of a fix's id (the request id it answered)
FIX_ID = name_arg("fix id", 100)


def _record_json(r: FixRecord) -> dict[str, Any]:
    return {"id": r.request_id, "case": r.case, "tech": r.tech, "fixer": r.fixer,
            "decision": r.decision, "state": r.state, "undoable": r.undo is not None,
            "started_at": r.started_at.isoformat(),
            "ended_at": None if r.ended_at is None else r.ended_at.isoformat()}


def cmd_fixes_list(args: argparse.Namespace) -> int:
    home = _home(args)
    home.state()
    store = LocalStore(home.db_path)
    try:
        records = store.fixes()
    finally:
        store.close()
    if args.json:
        print(safe_json_dumps([_record_json(r) for r in records], indent=2))
        return 0
    if not records:
        out("no fixes were applied on this computer")
    for r in records:
        undo = f"; undo: hw-agent fixes undo {r.request_id}" if r.undo is not None else ""
        out(f"{human_time(r.started_at, seconds=True)}  {r.request_id}  {r.fixer} on "
            f"{r.case} by {r.tech}: {r.state}{undo}")
    return 0


def cmd_fixes_undo(args: argparse.Namespace) -> int:
    from plugins import get_plugin_manager

    from .fixrunner import rollback_fix

    home = _home(args)
    home.state()
    store = LocalStore(home.db_path)
    try:
        record = next((r for r in store.fixes() if r.request_id == args.id), None)
        if record is None:
            raise AgentError(f"no fix {args.id!r} on this computer; list them with "
                             "`hw-agent fixes list`")
        if record.undo is None:
            raise AgentError(f"fix {args.id} ({record.fixer}, {record.state}) has nothing to "
                             "undo")
        try:
            undo = json.loads(record.undo)
        except ValueError:
            raise AgentError(f"the undo data of fix {args.id} is damaged; nothing was "
                             "changed") from None
        ctx = FixContext(args={}, workdir=home.path / "fixes", protected=(home.path,))
        try:
            outcome: FixOutcome = _run(rollback_fix(
                get_plugin_manager(), record.fixer, ctx,
                FixOutcome(True, "", undo=undo if isinstance(undo, dict) else None)))
        except FixError as exc:
            raise AgentError(f"fix {args.id} cannot be undone: {exc}") from None
        now = datetime.now(UTC)
        left = None if outcome.undo is None else json.dumps(dict(outcome.undo), default=str)
        store.end_fix(record.request_id, state=FIX_UNDONE if outcome.ok else record.state,
                      undo=left, now=now)
        store.log("fix-undone" if outcome.ok else "fix-undo-failed",
                  f"fix {record.fixer} on {record.case}: {outcome.summary}", now=now)
    finally:
        store.close()
    if args.json:
        print(safe_json_dumps({"ok": outcome.ok, "summary": outcome.summary,
                               "details": dict(outcome.details)}, default=str))
    else:
        out(outcome.summary)
    return 0 if outcome.ok else 1


def add_fix_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``hw-agent fixes list|undo``."""
    f = sub.add_parser("fixes", parents=[common], help="the fixes applied on this computer; "
                       "undo one")
    fsub = f.add_subparsers(dest="fixes_command", required=True, metavar="ACTION")
    s = fsub.add_parser("list", parents=[common], help="every fix, its state (done, "
                        "interrupted, undone) and whether it can be undone")
    s.add_argument("--json", action="store_true", help="machine-readable output: a list of "
                   "objects with id, case, tech, fixer, decision, state, undoable, "
                   "started_at and ended_at (UTC)")
    s.set_defaults(func=cmd_fixes_list)
    s = fsub.add_parser("undo", parents=[common], help="undo a fix (for disk.cleanup: put the "
                        "quarantined files back); exit 1 if some could not be restored")
    s.add_argument("id", type=FIX_ID, help="the fix's id, as `hw-agent fixes list` shows it")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_fixes_undo)
