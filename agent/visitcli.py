"""``hw-agent visit``: see on-site offers and tickets, accept or decline a slot, sign the
service confirmation. The logic is in :mod:`agent.visit`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from proto import messages as m
from proto.textsafe import safe_json_dumps
from proto.ticketstatus import status
from proto.timefmt import human_span

from .cliargs import SLOT, _home, _run, note_text, out, ticket_id
from .errors import VisitError
from .visit import (
    decide,
    describe_offer,
    load_offer,
    signoff_lines,
    visits,
)


def _print(t: m.TicketInfo) -> None:
    when = (f"{human_span(t.booked_start, t.booked_end)} with technician {t.technician}"
            if t.booked_start and t.booked_end else "not booked")
    out(f"{t.ticket}  {status(t, now=datetime.now(UTC), customer=True)}  case {t.case}  "
        f"{t.service}  {t.city}: {when}")
    if t.total is not None:
        out(f"  price: {t.total} {t.currency}" + (" (free visit)" if t.free_visit else ""))
    if not t.eligible:
        for r in t.reasons:
            out(f"  - {r}")
        for a in t.alternatives:
            out(f"  instead: {a}")
    if t.booked_start and t.checklist:
        out("  before the visit / 上门前请准备:")
        for c in t.checklist:
            out(f"    - {c}")
    for line in signoff_lines(t):
        out(f"  {line}")
        if not t.confirmed:
            out(f"  confirm with: hw-agent visit confirm {t.ticket}")


def cmd_visit_show(args: argparse.Namespace) -> int:

    home = _home(args)
    found = _run(visits(home))
    if args.ticket:
        found = [t for t in found if t.ticket == args.ticket]
        if not found:
            raise VisitError(f"no on-site ticket {args.ticket} for this computer")
    if args.json:
        print(safe_json_dumps(msgspec.to_builtins(found)))
    elif not found:
        out("no on-site tickets for this computer")
    for t in [] if args.json else found:
        _print(t)
        if t.state in (m.TicketState.PROPOSED, m.TicketState.RESCHEDULED):
            try:
                for line in describe_offer(load_offer(home.path, t.ticket)):
                    out(f"  {line}")
            except VisitError as exc:
                out(f"  {exc}")
    if args.ics:
        booked = [t for t in found if t.ics]
        if not booked:
            raise VisitError("no booked appointment to write as .ics")
        Path(args.ics).write_text(booked[0].ics, encoding="utf-8")
        out(f"appointment written to {args.ics}", file=sys.stderr)
    return 0


def cmd_visit_decide(args: argparse.Namespace) -> int:

    kind = m.VisitDecisionKind(args.visit_command)
    home = _home(args)
    if kind is m.VisitDecisionKind.CONFIRM and not args.yes:
        current = [t for t in _run(visits(home)) if t.ticket == args.ticket]
        if not current:
            raise VisitError(f"no on-site ticket {args.ticket} for this computer")
        for line in signoff_lines(current[0]):
            out(line)
        if not sys.stdin.isatty():
            raise VisitError("read the sign-off above, then confirm with --yes (no terminal "
                             "to ask on)")
        if input("sign the service confirmation? [y/N] ").strip().lower() not in ("y", "yes"):
            out("not confirmed")
            return 1
    ticket, message = _run(decide(home, args.ticket, kind, slot=getattr(args, "slot", None),
                                  note=getattr(args, "note", "")))
    if args.json:
        print(safe_json_dumps(msgspec.to_builtins(ticket)))
    else:
        out(f"{args.ticket}: {message}")
        _print(ticket)
    return 0


def add_visit_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    v = sub.add_parser("visit", parents=[common], help="on-site visits: offers, booking, "
                       "your signed service confirmation")
    vsub = v.add_subparsers(dest="visit_command", required=True, metavar="ACTION")
    s = vsub.add_parser("show", parents=[common], help="your on-site tickets and offers")
    s.add_argument("ticket", nargs="?", metavar="TICKET", type=ticket_id)
    s.add_argument("--ics", metavar="FILE", help="write the booked appointment as .ics")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_visit_show)
    s = vsub.add_parser("accept", parents=[common], help="accept slot N of a technician's "
                        "offer (signed with this computer's key); books the visit")
    s.add_argument("ticket", metavar="TICKET", type=ticket_id)
    s.add_argument("--slot", type=SLOT, required=True, metavar="N", help="1, 2 or 3")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_visit_decide)
    s = vsub.add_parser("decline", parents=[common], help="decline the offer; nothing is "
                        "booked")
    s.add_argument("ticket", metavar="TICKET", type=ticket_id)
    s.add_argument("--note", default="", type=note_text,
                   help="why (optional, up to 4096 characters)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_visit_decide)
    s = vsub.add_parser("confirm", parents=[common], help="sign the service confirmation "
                        "of the technician's sign-off (outcome, root cause, fee)")
    s.add_argument("ticket", metavar="TICKET", type=ticket_id)
    s.add_argument("--yes", action="store_true", help="confirm without asking (you have "
                   "read the sign-off)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_visit_decide)
