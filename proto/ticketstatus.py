"""What an on-site ticket waits for, when its state alone does not say (pure).

The wire keeps the ticket's ``state`` unchanged (``docs/protocol.md#on-site-tickets``); a
person reads the state together with :func:`awaiting`: a ticket signed off on site stays
``on-site`` until the customer signs the service confirmation, and an eligible offer may
have no slot ahead (no field technician covered the city yet, or every slot has passed).
Both follow from fields every ``TicketInfo`` carries (``resolved``, ``confirmed``,
``eligible``, ``slots``), so ``--json`` readers derive the same. "No slot ahead" is decided
here only (:func:`has_slot_ahead`): the server proposes such an offer again, ``hw-tech book``
asks it to before offering, and every reader prints it.
"""

from __future__ import annotations

from datetime import datetime

from .messages import TicketInfo, TicketState

#: States whose slots are offered to the customer.
OFFERED = (TicketState.PROPOSED, TicketState.RESCHEDULED)


def awaiting_confirmation(t: TicketInfo) -> bool:
    """Signed off on site, not yet confirmed by the customer's signature."""
    return t.state is TicketState.ON_SITE and t.resolved is not None and not t.confirmed


def has_slot_ahead(t: TicketInfo, now: datetime) -> bool:
    """Some slot of the ticket starts after ``now`` (an aware time)."""
    return any(s.start > now for s in t.slots)


def waits_for_slots(t: TicketInfo, now: datetime) -> bool:
    """An eligible offer (proposed or rescheduled) with no slot ahead: nothing the customer
    could accept; proposing it again cannot disturb an offer they may be looking at."""
    return t.state in OFFERED and t.eligible and not has_slot_ahead(t, now)


def awaiting(t: TicketInfo, *, now: datetime, customer: bool = False) -> str:
    """``""``, or what the ticket waits for, worded for the technician or the customer."""
    if awaiting_confirmation(t):
        return ("signed off: waiting for your signed confirmation" if customer else
                "signed off: awaiting the customer's signed confirmation")
    if waits_for_slots(t, now):
        return "every slot has passed" if t.slots else "no slots yet"
    return ""


def status(t: TicketInfo, *, now: datetime, customer: bool = False) -> str:
    """The state as a person reads it: ``on-site (signed off: awaiting ...)``."""
    what = awaiting(t, now=now, customer=customer)
    return t.state.value + (f" ({what})" if what else "")
