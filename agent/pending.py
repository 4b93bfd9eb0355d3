"""Questions waiting for the customer: consent requests and fix plans, each answered once.

A technician's consent request or a fix plan that needs approval becomes one :class:`Ask`
in the agent's :class:`Pending` registry. Every channel the customer may answer on — the
terminal prompt of ``hw-agent run`` (:mod:`agent.terminal`), the control socket
(``hw-agent consent grant|deny|approve|decline``), later a local web page — reads the same
registry and answers through it; the **first answer wins**, and the others see the ask
answered and stop asking (``docs/security.md#consent``):

=================================  ===========================================================
event                              what happens
=================================  ===========================================================
a channel answers first            the ask is answered: for consent the grant is recorded now
                                   (once), bound to the requesting key; the waiting request
                                   gets it and the other channels stop asking
a second channel answers           refused (:meth:`Pending.grant` returns ``None``,
                                   :meth:`Pending.decide` ``False``); no second grant
no answer before the deadline      answered "no" (``via="timeout"``): never approved by
                                   default
the customer revokes, the agent    the waiting request is cancelled; :meth:`Pending.close`
stops                              answers "no" so every channel stops asking
=================================  ===========================================================

A page would list :meth:`Pending.open` (each ask has a stable :attr:`Ask.id`), answer with
:meth:`Pending.grant` / :meth:`Pending.decline` / :meth:`Pending.decide` and ``via="page"``,
and learn of answers given elsewhere by awaiting :meth:`Ask.answered`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from proto import messages as m

from .consent import ConsentStore, Grant, Policy


class Kind(StrEnum):
    """What an ask waits for."""

    CONSENT = "consent"  # a technician's consent request: grant (some scopes) or decline
    FIX = "fix"          # a fix plan: approve or decline


@dataclass(frozen=True)
class Answer:
    """How an ask was answered: ``yes`` or not, on which channel, and the grant made."""

    yes: bool
    via: str  # terminal, control, page, timeout, cancelled
    grant: Grant | None = None

    def describe(self) -> str:
        """A few words for the channels that did not answer: what became of the ask."""
        if self.via == "timeout":
            return "no answer in time: declined"
        if self.via == "cancelled":
            return "the request was withdrawn"
        where = _CHANNEL.get(self.via, self.via)
        if self.grant is not None:
            return f"granted {', '.join(s.value for s in self.grant.scopes)} ({where})"
        return f"{'approved' if self.yes else 'declined'} ({where})"


_CHANNEL = {"control": "answered with hw-agent consent", "terminal": "answered in the "
            "terminal", "page": "answered on the support page"}


@dataclass(eq=False)
class Ask:
    """One question to the customer; :attr:`id` names it on every channel."""

    kind: Kind
    case: str
    tech: str
    what: str  # one line the customer reads: who asks what
    asked_at: datetime
    deadline: datetime
    fingerprint: str = ""  # the requesting key (consent): the grant is bound to it
    scopes: tuple[m.Scope, ...] = ()  # consent: the scopes asked for
    duration: timedelta = timedelta(0)  # consent: the duration asked for, capped by policy
    plan: m.FixPlanInfo | None = None  # fix: the plan the customer approves or declines
    id: str = field(default_factory=lambda: "ask-" + secrets.token_hex(6))
    _future: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future(), repr=False)

    @property
    def answer(self) -> Answer | None:
        """The answer, once there is one."""
        return self._future.result() if self._future.done() else None

    async def answered(self) -> Answer:
        """Wait for the answer, from whichever channel gives it."""
        return await asyncio.shield(self._future)


class Pending:
    """The open asks of one agent; the one place a customer's answer is recorded.

    Args:
        consents: where an answered consent request's grant is recorded.
        policy: caps the duration of every grant.
        clock: the current time (aware).
    """

    def __init__(self, consents: ConsentStore, policy: Policy,
                 clock: Callable[[], datetime]) -> None:
        self._consents = consents
        self._policy = policy
        self._clock = clock
        self._asks: dict[str, Ask] = {}

    # -- asking ------------------------------------------------------------------------

    def ask_consent(self, *, case: str, tech: str, fingerprint: str,
                    scopes: list[m.Scope], duration: timedelta, what: str, wait: float) -> Ask:
        """Open a consent request that waits at most ``wait`` seconds for an answer."""
        now = self._clock()
        return self._add(Ask(kind=Kind.CONSENT, case=case, tech=tech, fingerprint=fingerprint,
                             scopes=tuple(scopes), duration=self._policy.cap(duration),
                             what=what, asked_at=now, deadline=now + timedelta(seconds=wait)))

    def ask_fix(self, *, case: str, tech: str, plan: m.FixPlanInfo, what: str, wait: float
                ) -> Ask:
        """Open a fix approval that waits at most ``wait`` seconds for an answer."""
        now = self._clock()
        return self._add(Ask(kind=Kind.FIX, case=case, tech=tech, plan=plan, what=what,
                             asked_at=now, deadline=now + timedelta(seconds=wait)))

    def _add(self, ask: Ask) -> Ask:
        self._asks[ask.id] = ask
        return ask

    async def wait(self, ask: Ask) -> Answer:
        """The answer, or "no" (``via="timeout"``) at the deadline; the ask is closed after.

        Cancelled (the customer revoked, the agent stops): the ask is closed as withdrawn.
        """
        left = (ask.deadline - self._clock()).total_seconds()
        try:
            return await asyncio.wait_for(ask.answered(), max(left, 0.0))
        except TimeoutError:
            self._settle(ask, Answer(yes=False, via="timeout"))
            answer = ask.answer
            assert answer is not None
            return answer
        finally:
            self.close(ask)

    def close(self, ask: Ask, via: str = "cancelled") -> None:
        """Forget ``ask``; unanswered, it is answered "no" so every channel stops asking."""
        self._settle(ask, Answer(yes=False, via=via))
        self._asks.pop(ask.id, None)

    # -- looking -----------------------------------------------------------------------

    def open(self) -> list[Ask]:
        """The unanswered asks, oldest first."""
        return [a for a in self._asks.values() if a.answer is None]

    def get(self, ask_id: str) -> Ask | None:
        ask = self._asks.get(ask_id)
        return ask if ask is not None and ask.answer is None else None

    def consent_for(self, case: str, tech: str) -> Ask | None:
        """The oldest unanswered consent request of ``tech`` on ``case``."""
        return next((a for a in self.open() if a.kind is Kind.CONSENT and a.case == case
                     and a.tech == tech), None)

    def fix_for(self, case: str) -> Ask | None:
        """The fix plan waiting for approval on ``case`` (at most one per case)."""
        return next((a for a in self.open() if a.kind is Kind.FIX and a.case == case), None)

    # -- answering (first answer wins) -------------------------------------------------

    def grant(self, ask: Ask, *, scopes: list[m.Scope], duration: timedelta, via: str,
              fix_needs_approval: bool = True) -> Grant | None:
        """Answer a consent request with a grant, recorded now and bound to the requesting
        key; ``None`` if it was answered already (nothing is recorded then)."""
        if ask.kind is not Kind.CONSENT or ask.answer is not None:
            return None
        grant = self._consents.grant(
            case=ask.case, tech=ask.tech, scopes=scopes, duration=duration, now=self._clock(),
            via=via, policy=self._policy, tech_fingerprint=ask.fingerprint,
            fix_needs_approval=fix_needs_approval)
        self._settle(ask, Answer(yes=True, via=via, grant=grant))
        return grant

    def decline(self, ask: Ask, *, via: str) -> bool:
        """Decline a consent request; ``False`` if it was answered already."""
        return ask.kind is Kind.CONSENT and self._settle(ask, Answer(yes=False, via=via))

    def decide(self, ask: Ask, *, approve: bool, via: str) -> bool:
        """Approve or decline a fix plan; ``False`` if it was answered already."""
        return ask.kind is Kind.FIX and self._settle(ask, Answer(yes=approve, via=via))

    @staticmethod
    def _settle(ask: Ask, answer: Answer) -> bool:
        if ask._future.done():
            return False
        ask._future.set_result(answer)
        return True
