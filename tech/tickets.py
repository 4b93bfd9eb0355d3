"""``hw-tech`` commands for on-site tickets: escalate, tickets, ticket, book.

The ticket lifecycle is in :mod:`server.onsite.tickets`; these commands only ask the server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proto import messages as m
from proto.ticketstatus import OFFERED, status, waits_for_slots
from proto.timefmt import human_span

from .cliargs import TICKET_RE as TICKET_RE  # re-exported
from .cliargs import (
    accepted_by,
    note_text,
    reason_text,
    satisfaction,
    service_name,
    slot_time,
    ticket_id,
    yes_no,
)
from .client import TechClient
from .common import _call, _dump, _out, _profile, _table, _when, case_number
from .errors import TechError


def _money(t: m.TicketInfo, amount: int | None) -> str:
    return "-" if amount is None else f"{amount} {t.currency}"


def print_ticket(t: m.TicketInfo, out: Any) -> None:

    _out(f"{t.ticket}  {status(t, now=datetime.now(UTC))}  case {t.case}  {t.customer}  "
         f"{t.city} (tier {t.tier})")
    _out(f"  service {t.service}; reason: {t.reason}")
    _out(f"  eligible: {'yes' if t.eligible else 'no'}; covered: "
         f"{'yes' if t.covered else 'no'}" + ("; working days provisional" if t.provisional
                                              else ""))
    for r in t.reasons:
        _out(f"    - {r}")
    if t.alternatives:
        _out("  remote alternatives:")
        for a in t.alternatives:
            _out(f"    - {a}")
    if t.price_items:
        _out(f"  quote: {_money(t, t.total)}" + (" (free visit)" if t.free_visit else ""))
        for i in t.price_items:
            _out(f"    {i.amount:>6}  {i.name}")
    if t.slots and t.state in OFFERED:
        _out("  proposed slots:")
        for n, s in enumerate(t.slots, 1):
            flags = ", ".join(x for x, on in (("urgent", s.urgent), ("overtime", s.overtime))
                              if on)
            _out(f"    {n}. {human_span(s.start, s.end)}  {s.total} "
                 f"{t.currency}{'  (' + flags + ')' if flags else ''}")
    if t.booked_start is not None:
        _out(f"  booked: {human_span(t.booked_start, t.booked_end)} with {t.technician} "
             f"(accepted by {t.accepted_by})")
    if t.preparation:
        _out("  preparation:")
        for p in t.preparation:
            _out(f"    - {p}")
    if t.checklist:
        _out("  customer checklist:")
        for c in t.checklist:
            _out(f"    - {c}")
    for f in t.findings:
        _out(f"  finding {f.severity.value} {f.code}: {f.summary}")
    for fx in t.fixes:
        _out(f"  fix {fx}")
    if t.resolved is not None:
        _out(f"  sign-off: {'resolved' if t.resolved else 'unresolved'}, root cause "
             f"{t.root_cause.value if t.root_cause else '-'}, fee {_money(t, t.fee)}"
             + (f"; {t.signoff_note}" if t.signoff_note else ""))
        _out(f"  customer confirmation: {'signed' if t.confirmed else 'waiting'}")
    if t.followup_due is not None:
        _out(f"  follow-up call due {t.followup_due}" + (
            f": {'resolved' if t.followup_resolved else 'NOT resolved'}, satisfaction "
            f"{t.satisfaction}/5" if t.followup_resolved is not None else ""))
    for h in t.history:
        _out(f"  {_when(h.at)}  {h.state:<12} {h.actor}  {h.note}")


def _ticket_reply(args: argparse.Namespace, reply: m.TicketDetail) -> int:

    if args.json:
        _dump(reply.ticket)
    else:
        print_ticket(reply.ticket, sys.stdout)
    if getattr(args, "ics", None) and reply.ticket.ics:
        Path(args.ics).write_text(reply.ticket.ics, encoding="utf-8")
    return 0


def _no_slots(t: m.TicketInfo) -> str:
    """Why an eligible offer has no slot (the quote's last reason says it)."""
    return (f"ticket {t.ticket} has no slot to offer ({t.state.value})"
            + (f": {t.reasons[-1]}" if t.reasons else "")
            + f"; see `hw-tech ticket show {t.ticket}`")


def cmd_escalate(args: argparse.Namespace) -> int:
    """Open the case's ticket, or propose its open offer again when it has no slot ahead
    (slots from the field technicians on record now)."""

    reply = _call(args, lambda rid: m.EscalateCase(id=rid, case=args.case, reason=args.reason,
                                                   service=args.service))
    t = reply.ticket
    if waits_for_slots(t, datetime.now(UTC)):
        _out(f"hw-tech: note: {_no_slots(t)}", file=sys.stderr)
    return _ticket_reply(args, reply)


def cmd_tickets(args: argparse.Namespace) -> int:

    state = m.TicketState(args.state) if args.state else None
    reply = _call(args, lambda rid: m.ListTickets(id=rid, state=state,
                                                  followup_due=args.followup_due))
    if args.json:
        _dump(reply.tickets)
    else:
        now = datetime.now(UTC)
        _table([[t.ticket, status(t, now=now), t.case, t.customer, t.city,
                 str(len(t.slots)) if t.state in OFFERED else "-",
                 human_span(t.booked_start), t.technician or "-", _money(t, t.total)]
                for t in reply.tickets],
               ["TICKET", "STATE", "CASE", "CUSTOMER", "CITY", "SLOTS", "BOOKED",
                "TECHNICIAN", "TOTAL"])
    return 0


def cmd_ticket(args: argparse.Namespace) -> int:

    action = args.ticket_action
    if action == "show":
        reply = _call(args, lambda rid: m.GetTicket(id=rid, ticket=args.ticket))
        return _ticket_reply(args, reply)
    to = {"prepare": m.TicketState.PREPARED, "arrive": m.TicketState.ON_SITE,
          "signoff": m.TicketState.ON_SITE, "followup": m.TicketState.FOLLOWED_UP,
          "close": m.TicketState.CLOSED, "reschedule": m.TicketState.RESCHEDULED,
          "cancel": m.TicketState.CANCELLED}[action]
    root = m.RootCause(args.root_cause) if getattr(args, "root_cause", None) else None
    reply = _call(args, lambda rid: m.UpdateTicket(
        id=rid, ticket=args.ticket, to=to, note=args.note,
        resolved=getattr(args, "resolved", None), root_cause=root,
        satisfaction=getattr(args, "satisfaction", None)))
    return _ticket_reply(args, reply)


def cmd_book(args: argparse.Namespace) -> int:
    """With --slot: record the customer's acceptance by phone. Without: offer the ticket's
    quote and slots to the customer through the agent (signed, needs book-visit)."""

    if args.slot is not None:
        if not args.accepted_by:
            raise TechError("--slot records an acceptance made outside the agent: say how "
                            "with --accepted-by phone (nothing is booked without acceptance)")
        reply = _call(args, lambda rid: m.BookVisit(id=rid, ticket=args.ticket,
                                                    start=args.slot,
                                                    accepted_by=args.accepted_by))
        return _ticket_reply(args, reply)
    profile = _profile(args)

    async def go() -> Any:
        async with TechClient(profile) as client:
            detail = await client.call(m.GetTicket(id=client.new_id(), ticket=args.ticket))
            if not isinstance(detail, m.TicketDetail):
                raise TechError(f"the server answered {type(detail).__name__} for ticket "
                                f"{args.ticket}; retry, or see `hw-tech ticket show`")
            t = detail.ticket
            if waits_for_slots(t, datetime.now(UTC)):
                # no slot ahead: propose again from the field technicians on record now
                detail = await client.call(m.EscalateCase(
                    id=client.new_id(), case=t.case, service=t.service,
                    reason=f"before offering {t.ticket} to the customer"))
                if not isinstance(detail, m.TicketDetail):
                    raise TechError(f"the server answered {type(detail).__name__} when "
                                    f"proposing ticket {t.ticket} again; retry")
                t = detail.ticket
            if not t.slots or t.state not in OFFERED:
                raise TechError(_no_slots(t) if t.state in OFFERED else
                                f"ticket {t.ticket} is {t.state.value}; only a proposed or "
                                "rescheduled ticket is offered to the customer")
            offer = {"ticket": t.ticket, "service": t.service, "currency": t.currency,
                     "items": [{"name": i.name, "amount": i.amount} for i in t.price_items],
                     "slots": [{"start": s.start.isoformat(), "end": s.end.isoformat(),
                                "total": s.total, "urgent": s.urgent,
                                "overtime": s.overtime} for s in t.slots],
                     "checklist": list(t.checklist)}
            agent_id = await client.agent_of(t.case)
            signed = client.sign(agent_id=agent_id, case=t.case, action=m.Action.BOOK_VISIT,
                                 args=offer)
            return await client.call(m.OfferVisit(id=client.new_id(), ticket=t.ticket,
                                                  case=t.case, command=signed))

    reply = asyncio.run(go())
    if not args.json:
        _out(f"offered to the customer of {reply.ticket.case}; they accept with "
             f"`hw-agent visit accept {reply.ticket.ticket} --slot N`")
    return _ticket_reply(args, reply)


def add_ticket_commands(sub: Any, common: argparse.ArgumentParser) -> None:

    s = sub.add_parser("escalate", parents=[common], help="turn a case into an on-site "
                       "ticket (quote, slots, preparation list, checklist)",
                       description="Turn a case into an on-site ticket: quote, up to three "
                       "slots from the field technicians on record, preparation list, "
                       "customer checklist. A case with an open ticket gets no second one: "
                       "an offer with no slot ahead is proposed again (new slots and quote; "
                       "a history entry and a ticket.proposed-again audit entry), any other "
                       "open ticket is shown as it is.")
    s.add_argument("case", metavar="CASE", type=case_number)
    s.add_argument("--reason", required=True, type=reason_text,
                   help="why remote support cannot solve it (up to 4096 characters)")
    s.add_argument("--service", default="hardware-repair", type=service_name,
                   help="service type of the on-site policy (default hardware-repair)")
    s.set_defaults(func=cmd_escalate)

    s = sub.add_parser("tickets", parents=[common], help="on-site tickets, newest first")
    s.add_argument("--state", choices=[st.value for st in m.TicketState])
    s.add_argument("--followup-due", action="store_true",
                   help="only confirmed tickets whose follow-up call is due today or earlier")
    s.set_defaults(func=cmd_tickets)

    t = sub.add_parser("ticket", parents=[common], help="show a ticket or move it along "
                       "(prepare, arrive, signoff, followup, close, reschedule, cancel)")
    tsub = t.add_subparsers(dest="ticket_action", required=True, metavar="ACTION")
    specs = {
        "show": "the ticket: quote, slots, booking, preparation, checklist, history",
        "prepare": "parts, tools and documents are ready (booked -> prepared)",
        "arrive": "the technician is on site (prepared -> on-site)",
        "signoff": "record the outcome and root cause on site; settles the fee",
        "followup": "record the follow-up call (confirmed -> followed-up); "
                    "'--resolved no' reopens the case",
        "close": "close a followed-up ticket",
        "reschedule": "release the booking and propose new slots",
        "cancel": "cancel (releases the booking and any free visit)",
    }
    for name, text in specs.items():
        s = tsub.add_parser(name, parents=[common], help=text, description=text)
        s.add_argument("ticket", metavar="TICKET", type=ticket_id)
        s.add_argument("--note", default="", type=note_text,
                       help="a note for the ticket's history (up to 4096 characters)")
        if name == "show":
            s.add_argument("--ics", metavar="FILE",
                           help="also write the booked appointment as an .ics file")
        if name in ("signoff", "followup"):
            s.add_argument("--resolved", type=yes_no, required=True, metavar="yes|no",
                           help="was the problem solved")
        if name == "signoff":
            s.add_argument("--root-cause", required=True,
                           choices=[r.value for r in m.RootCause],
                           help="settles the fee: product-defect/service-failure unresolved: "
                                "no fee; customer-device/third-party unresolved: base fee")
        if name == "followup":
            s.add_argument("--satisfaction", type=satisfaction, required=True,
                           metavar="1-5", help="the customer's satisfaction, 1 (poor) to 5 "
                                               "(excellent)")
        s.set_defaults(func=cmd_ticket)

    s = sub.add_parser("book", parents=[common], help="offer the ticket's quote and slots to "
                       "the customer through the agent (book-visit scope), or with --slot "
                       "record an acceptance given by phone")
    s.add_argument("ticket", metavar="TICKET", type=ticket_id)
    s.add_argument("--slot", type=slot_time, metavar="DATETIME",
                   help="the slot the customer accepted, e.g. 2026-12-02T10:00 (China "
                        "time; years 2000-2099)")
    s.add_argument("--accepted-by", metavar="HOW", type=accepted_by, help="how the "
                   "customer accepted, e.g. phone (required with --slot)")
    s.add_argument("--ics", metavar="FILE", help="write the booked appointment as .ics")
    s.set_defaults(func=cmd_book)
