"""What an on-site ticket waits for, when its state alone does not say (pure).

The wire keeps the ticket's ``state`` unchanged (``docs/protocol.md#on-site-tickets``); a
person reads the state together with :func:`awaiting`: a ticket signed off on site stays
``on-site`` until the customer signs the service confirmation, and an eligible offer may
have no slot yet (no field technician covers the city). Both follow from fields every
``TicketInfo`` carries (``resolved``, ``confirmed``, ``eligible``, ``slots``), so ``--json``
readers derive the same.
"""

from __future__ import annotations

from .messages import TicketInfo, TicketState

#: States whose slots are offered to the customer.
OFFERED = (TicketState.PROPOSED, TicketState.RESCHEDULED)


def awaiting_confirmation(t: TicketInfo) -> bool:
    """Signed off on site, not yet confirmed by the customer's signature."""
    return t.state is TicketState.ON_SITE and t.resolved is not None and not t.confirmed


def awaiting(t: TicketInfo, *, customer: bool = False) -> str:
    """``""``, or what the ticket waits for, worded for the technician or the customer."""
    if awaiting_confirmation(t):
        return ("signed off: waiting for your signed confirmation" if customer else
                "signed off: awaiting the customer's signed confirmation")
    if t.state in OFFERED and t.eligible and not t.slots:
        return "no slots yet"
    return ""


def status(t: TicketInfo, *, customer: bool = False) -> str:
    """The state as a person reads it: ``on-site (signed off: awaiting ...)``."""
    what = awaiting(t, customer=customer)
    return t.state.value + (f" ({what})" if what else "")
