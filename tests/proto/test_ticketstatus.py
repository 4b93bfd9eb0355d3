"""What a ticket waits for (issue 12, bug 5): a signed-off ticket reads as awaiting the
customer's confirmation, not just `on-site`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from proto import messages as m
from proto.ticketstatus import (
    awaiting,
    awaiting_confirmation,
    has_slot_ahead,
    status,
    waits_for_slots,
)

AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
S = m.TicketState


def ticket(**kw: object) -> m.TicketInfo:
    base = m.TicketInfo(ticket="TK-20261126-0001", case="HW-20261126-0001", agent_id="ag-1",
                        customer="Li Wei", state=S.PROPOSED, created_at=AT, updated_at=AT,
                        reason="fan", service="hardware-repair", city="上海", tier="1",
                        eligible=True, covered=True, provisional=False, currency="CNY")
    return msgspec.structs.replace(base, **kw)


def test_signed_off_on_site_awaits_the_customers_confirmation() -> None:
    arrived = ticket(state=S.ON_SITE)
    assert status(arrived, now=AT) == "on-site" and not awaiting_confirmation(arrived)
    signed = ticket(state=S.ON_SITE, resolved=True, root_cause=m.RootCause.PRODUCT_DEFECT,
                    fee=480)
    assert awaiting_confirmation(signed)
    assert status(signed, now=AT) == ("on-site (signed off: awaiting the customer's signed "
                                      "confirmation)")
    assert status(signed, now=AT, customer=True) == ("on-site (signed off: waiting for your "
                                                     "signed confirmation)")
    done = ticket(state=S.CONFIRMED, resolved=True, confirmed=True)
    assert status(done, now=AT) == "confirmed" and awaiting(done, now=AT) == ""


def test_an_offer_without_slots_says_so() -> None:
    assert status(ticket(), now=AT) == "proposed (no slots yet)"
    slot = m.SlotOffer(start=AT, end=AT + timedelta(hours=2), total=480)
    assert status(ticket(slots=[slot]), now=AT - timedelta(hours=1)) == "proposed"
    assert status(ticket(state=S.NOT_ELIGIBLE, eligible=False), now=AT) == "not-eligible"


def test_an_offer_whose_slots_have_all_passed_says_so() -> None:
    slot = m.SlotOffer(start=AT, end=AT + timedelta(hours=2), total=480)
    offer = ticket(state=S.RESCHEDULED, slots=[slot])
    assert has_slot_ahead(offer, AT - timedelta(seconds=1))
    assert not has_slot_ahead(offer, AT)  # starting now is not ahead
    assert not waits_for_slots(offer, AT - timedelta(seconds=1))
    assert waits_for_slots(offer, AT)
    assert status(offer, now=AT + timedelta(days=1)) == "rescheduled (every slot has passed)"
    assert status(offer, now=AT, customer=True) == "rescheduled (every slot has passed)"


def test_only_an_eligible_offer_waits_for_slots() -> None:
    assert waits_for_slots(ticket(), AT)
    for state in (S.BOOKED, S.NOT_ELIGIBLE, S.CANCELLED):
        assert not waits_for_slots(ticket(state=state), AT), state
    assert not waits_for_slots(ticket(eligible=False), AT)
