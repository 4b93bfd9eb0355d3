"""Exceptions of the on-site desk (every message says what happened and what to do).

::

    ValueError
    ├── PolicyError        the policy file has an unknown key or a bad value
    ├── EligibilityError   a bad argument to the eligibility rules (unknown kind or service)
    └── QuoteError         a request that cannot be quoted (naive datetimes, a past slot)
    UnknownCity            text that matches no single known city (the pure coverage module)
    server.store.StoreError
    └── TicketError        a ticket operation that cannot be done now (with SlotTaken and
                           CityNotKnown, in :mod:`server.onsite.tickets`: they are store
                           errors, and this module stays free of the store for the pure
                           rules above)
"""

from __future__ import annotations


class PolicyError(ValueError):
    """The policy file has an unknown key or a bad value; the message says which and how."""


class EligibilityError(ValueError):
    """A bad argument (unknown customer kind or service)."""


class QuoteError(ValueError):
    """The request cannot be quoted (naive datetimes, a slot in the past)."""


class UnknownCity(Exception):
    """The text could not be matched to exactly one known city."""
