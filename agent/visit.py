"""The customer's side of an on-site visit: offers, acceptance, signed confirmation.

A technician offers a ticket's quote and slots with a command signed by their key (action
``book-visit``, needs the ``book-visit`` scope in an active grant); the running agent checks
it like every command and keeps the offer in ``<home>/visits/<ticket>.json``. The customer
then accepts one of *those* slots (``hw-agent visit accept``): the acceptance names the slot
and the price the technician signed, and is itself signed with the agent's key, so neither the
server nor anyone else can book a slot or a price the customer was not offered. After the
visit the customer signs the service confirmation (``hw-agent visit confirm``) of the sign-off
the server shows; the server keeps the signature (``hw-server ticket verify``).
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from proto import messages as m
from proto.receipt import sign_visit
from proto.timefmt import human_span

from .connection import close_text, dial
from .errors import Unreachable, VisitError
from .home import AgentHome
from .localstore import LocalStore

VISITS_DIR = "visits"


def now_utc() -> datetime:
    return datetime.now(UTC)


def offers_dir(home: Path) -> Path:
    return home / VISITS_DIR


def save_offer(home: Path, *, ticket: str, case: str, tech: str, args: dict[str, Any],
               received_at: datetime) -> Path:
    """Keep a technician's signed offer (atomically, readable only by the customer)."""
    folder = offers_dir(home)
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{ticket}.json"
    tmp = path.with_suffix(".tmp")
    data = {"ticket": ticket, "case": case, "tech": tech, "received_at": received_at.isoformat(),
            "offer": args}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)
    return path


def load_offer(home: Path, ticket: str) -> dict[str, Any]:
    path = offers_dir(home) / f"{ticket}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VisitError(f"no technician has offered slots for {ticket} on this computer; "
                         f"ask them to send the offer (`hw-tech book {ticket}`, which needs "
                         "your book-visit consent)") from None
    except ValueError:
        raise VisitError(f"{path} is damaged; ask the technician to offer again") from None
    return data


def describe_offer(data: dict[str, Any]) -> list[str]:
    """The offer as the customer sees it: who offers what, for how much."""
    offer = data["offer"]
    lines = [f"on-site visit offer {data['ticket']} for case {data['case']} from technician "
             f"{data['tech']} ({offer.get('service', '?')}):"]
    for item in offer.get("items", []):
        lines.append(f"    {item.get('amount'):>6} {offer.get('currency', '')}  {item.get('name')}")
    for n, slot in enumerate(offer.get("slots", []), 1):
        flags = [x for x in ("urgent", "overtime") if slot.get(x)]
        when = human_span(datetime.fromisoformat(slot["start"]),
                         datetime.fromisoformat(slot["end"]))
        lines.append(f"  {n}. {when}  "
                     f"{slot['total']} {offer.get('currency', '')}"
                     + (f" ({', '.join(flags)})" if flags else ""))
    if offer.get("checklist"):
        lines.append("  before the visit / 上门前请准备:")
        lines += [f"    - {c}" for c in offer["checklist"]]
    lines.append(f"  accept with: hw-agent visit accept {data['ticket']} --slot N")
    return lines


async def call(home: AgentHome, msg: m.GetVisits | m.VisitUpdate) -> m.VisitList:
    """One request on a short ``call`` connection; the server's refusal raises VisitError."""
    state = home.state()
    link = await dial(state.urls, home.ssl_context(), agent_id=state.agent_id, key=home.key(),
                      mode=m.Mode.CALL)
    try:
        await link.send(msg)
        while True:
            reply = await link.recv()
            if isinstance(reply, m.VisitList) and reply.re == msg.id:
                break
            if isinstance(reply, m.Error):
                raise VisitError(f"the server refused: {reply.message}")
        await link.ws.send(link.session.send(m.Bye(reason="done")), text=True)
    except ConnectionClosed as exc:
        raise Unreachable(close_text(exc)) from None
    finally:
        await link.ws.close()
    return reply


async def visits(home: AgentHome) -> list[m.TicketInfo]:
    return (await call(home, m.GetVisits(id="gv-" + secrets.token_hex(8)))).visits


def _find(found: list[m.TicketInfo], ticket: str) -> m.TicketInfo:
    for t in found:
        if t.ticket == ticket:
            return t
    raise VisitError(f"the server knows no on-site ticket {ticket} for this computer; list "
                     "them with `hw-agent visit show`")


async def decide(home: AgentHome, ticket: str, kind: m.VisitDecisionKind, *,
                 slot: int | None = None, note: str = "") -> tuple[m.TicketInfo, str]:
    """Sign the customer's decision and send it; returns the updated ticket and a message."""
    state = home.state()
    now = now_utc()
    current = _find(await visits(home), ticket)
    fields: dict[str, Any] = {}
    if kind is m.VisitDecisionKind.ACCEPT:
        data = load_offer(home.path, ticket)
        slots = data["offer"].get("slots", [])
        if slot is None or not 1 <= slot <= len(slots):
            raise VisitError(f"--slot takes 1 to {len(slots)} (see `hw-agent visit show "
                             f"{ticket}`)")
        chosen = slots[slot - 1]
        fields = {"start": datetime.fromisoformat(chosen["start"]),
                  "total": int(chosen["total"])}
    elif kind is m.VisitDecisionKind.CONFIRM:
        if current.resolved is None:
            raise VisitError(f"ticket {ticket} has no sign-off to confirm yet (it is "
                             f"{current.state.value})")
        fields = {"resolved": current.resolved, "root_cause": current.root_cause,
                  "fee": current.fee}
    decision = m.VisitDecision(ticket=ticket, case=current.case, agent_id=state.agent_id,
                               decision=kind, at=now, note=note[:4000], **fields)
    signed = sign_visit(decision, home.key())
    reply = await call(home, m.VisitUpdate(id="vu-" + secrets.token_hex(8), signed=signed))
    store = LocalStore(home.db_path)
    try:
        store.log(f"visit-{kind.value}", f"{ticket} (case {current.case}): {reply.message}",
                  now=now_utc())
    finally:
        store.close()
    return _find(reply.visits, ticket), reply.message


def signoff_lines(t: m.TicketInfo) -> list[str]:
    if t.resolved is None:
        return []
    cause = t.root_cause.value if t.root_cause else "-"
    return [f"sign-off of {t.ticket}: {'resolved' if t.resolved else 'NOT resolved'}; root "
            f"cause {cause}; fee {t.fee} {t.currency}"
            + (f"; note: {t.signoff_note}" if t.signoff_note else "")]
