"""Per-agent quotas: what one enrolled agent may make the server store.

See ``docs/operations.md#quotas``.

An enrolled agent is untrusted (``docs/security.md#a-rogue-agent``): a stolen or rogue one
must not fill the store or bury other customers' cases. Each limit is refused with a
message that says which limit it was and when to retry; the refusal is audited
(``quota.refused``) at most once per :attr:`Quotas.audit_interval_s` per agent and limit,
with the count of refusals since the last entry, so a flood of attempts is not a flood of
audit entries.

=========================  ======================================  ===========================
limit                      counts                                   when refused
=========================  ======================================  ===========================
``open_cases``             the agent's cases still in state         ``open_case``; retry once
                           ``open`` (no technician worked on them)  a technician took one up
``cases_per_minute``       cases the agent opened in the last 60 s  ``open_case``; retry after
                                                                    the time it says
``result_bytes``           stored bytes of one result (payload and  ``result``; not stored, the
(``result_max_bytes``)     error text); frames are 1 MiB at most    agent drops it
``receipts_per_minute``    new consent receipts the agent had       ``consent_update`` (or the
(``agent_receipts_per_     stored in the last 60 s (a resend of a   receipt of a result); not
minute``)                  stored one is not new)                   stored, the agent drops it
=========================  ======================================  ===========================

(In parentheses: the ``config.toml`` setting where its name differs.)

The decisions are pure functions (:func:`check_case_open`, :func:`check_result_size`,
:func:`check_receipt_rate`); the case counts are read in the transaction that opens the
case (:meth:`server.store.cases.CaseStore.open_case`) and the receipt counts in the one
that stores the receipt (:meth:`server.store.receipts.ReceiptStore.store_consent_receipt`),
so concurrent attempts cannot pass a limit together, and the counts survive restarts.
:class:`RefusalLog` remembers recent refusals in memory: an agent that keeps retrying is
refused from memory until its retry time (no store transaction per attempt), and only the
first refusal per interval is audited.

Sessions are bounded too (not quotas on what is stored, but set next to them): an agent
holds at most ``max_calls_per_agent`` ``call`` sessions at once on a node, each closed
after ``call_idle_timeout_s`` without a message, and one ``run`` session (a newer one
replaces it) (:mod:`server.agent_gateway`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from .errors import ServerError

__all__ = ["CASE_RATE_WINDOW", "RECEIPT_RATE_WINDOW", "RECHECK_S", "QuotaExceeded", "Quotas",
           "RefusalLog", "check_case_open", "check_receipt_rate", "check_result_size"]

#: The window of ``cases_per_minute``.
CASE_RATE_WINDOW: Final = timedelta(seconds=60)
#: The window of ``receipts_per_minute``.
RECEIPT_RATE_WINDOW: Final = timedelta(seconds=60)
#: How long a refusal with no retry time of its own (``open_cases``) is answered from memory
#: before the store is asked again.
RECHECK_S: Final = 5.0


@dataclass(frozen=True)
class Quotas:
    """The per-agent limits (``config.toml``; see ``docs/operations.md#quotas``)."""

    #: cases of one agent in state ``open`` (waiting for a technician) at most
    open_cases: int = 20
    #: cases one agent opens in any 60 seconds at most
    cases_per_minute: int = 10
    #: bytes of one stored result (its payload and error text) at most: a full diagnosis
    #: with the built-in probes is ~5 KB, and the 20 newest results a case detail carries
    #: (``server/tech_gateway.py``) then fit its 1 MiB frame
    result_bytes: int = 48 * 1024
    #: new consent receipts one agent has stored in any 60 seconds at most: a customer
    #: grants or revokes by hand, a few a minute at the very most; each receipt is up to
    #: 8 KB and an audit entry
    receipts_per_minute: int = 30
    #: seconds between two ``quota.refused`` (or ``result.refused``) audit entries of one
    #: agent and limit; the refusals in between are counted in the next entry
    audit_interval_s: float = 60.0


class QuotaExceeded(ServerError):
    """An agent went over one of its :class:`Quotas`; the text says which limit and when
    to retry. ``retry_after``: seconds until a retry can pass (``None``: once something
    else changed, said by ``then``, e.g. a technician took up a case)."""

    def __init__(self, limit: str, what: str, *, allowed: int,
                 retry_after: float | None = None, then: str = "") -> None:
        when = then if retry_after is None else f"retry in {max(1, int(retry_after))} s"
        super().__init__(f"{what}; {when}" if when else what)
        self.limit = limit
        self.what = what
        self.allowed = allowed
        self.retry_after = retry_after
        self.then = then

    def later(self, retry_after: float) -> QuotaExceeded:
        """The same refusal with a new retry time."""
        return QuotaExceeded(self.limit, self.what, allowed=self.allowed,
                             retry_after=retry_after, then=self.then)


def check_case_open(quotas: Quotas, *, waiting: int, recent: int,
                    oldest_recent: datetime | None, now: datetime) -> None:
    """May an agent with ``waiting`` cases in state ``open`` and ``recent`` cases opened in
    the last :data:`CASE_RATE_WINDOW` (the oldest at ``oldest_recent``) open one more?

    Raises:
        QuotaExceeded: ``open_cases`` or ``cases_per_minute``.
    """
    if waiting >= quotas.open_cases:
        raise QuotaExceeded(
            "open_cases",
            f"case refused: this computer already has {waiting} cases waiting for a "
            f"technician (the limit is {quotas.open_cases} per computer)",
            allowed=quotas.open_cases,
            then="retry once HelloWord support has taken one of them up")
    if recent >= quotas.cases_per_minute:
        free_at = (oldest_recent or now) + CASE_RATE_WINDOW
        wait = max(1, int((free_at - now).total_seconds() + 0.999))
        raise QuotaExceeded(
            "cases_per_minute",
            f"case refused: this computer opened {recent} cases in the last minute (the "
            f"limit is {quotas.cases_per_minute} per minute)",
            allowed=quotas.cases_per_minute, retry_after=float(wait))


def check_result_size(quotas: Quotas, *, result_id: str, size: int) -> None:
    """May a result of ``size`` stored bytes be stored?

    Raises:
        QuotaExceeded: ``result_bytes``; the result is not stored and will not be.
    """
    if size > quotas.result_bytes:
        raise QuotaExceeded(
            "result_bytes",
            f"result {result_id} is {size} bytes, over the server's limit of "
            f"{quotas.result_bytes} bytes per result; it was not stored and will not be",
            allowed=quotas.result_bytes,
            then="run fewer probes at a time, or ask the operator to raise result_max_bytes")


def check_receipt_rate(quotas: Quotas, *, recent: int, oldest_recent: datetime | None,
                       now: datetime) -> None:
    """May an agent that stored ``recent`` new consent receipts in the last
    :data:`RECEIPT_RATE_WINDOW` (the oldest at ``oldest_recent``) store one more?

    Raises:
        QuotaExceeded: ``receipts_per_minute``; the receipt is not stored.
    """
    if recent >= quotas.receipts_per_minute:
        free_at = (oldest_recent or now) + RECEIPT_RATE_WINDOW
        wait = max(1, int((free_at - now).total_seconds() + 0.999))
        raise QuotaExceeded(
            "receipts_per_minute",
            f"consent receipt refused: this computer sent {recent} new consent receipts in "
            f"the last minute (the limit is {quotas.receipts_per_minute} per minute); it was "
            f"not stored",
            allowed=quotas.receipts_per_minute, retry_after=float(wait))


@dataclass(slots=True)
class _Seen:
    audited_at: float
    since: int = 0  # refusals since the last audit entry
    hold_until: float = 0.0
    refusal: QuotaExceeded | None = None


class RefusalLog:
    """Recent refusals per (agent, limit) in memory, on a monotonic clock the caller passes.

    :meth:`note` decides whether a refusal is audited (the first per interval, with the
    count of those since); :meth:`hold` and :meth:`held` answer an agent that retries
    before its retry time from memory. At most ``max_entries`` keys are kept: when full,
    entries older than the interval are dropped, and if none are, all are (the next
    refusal of each is then audited again: more entries, never fewer).
    """

    def __init__(self, interval: float, max_entries: int = 100_000) -> None:
        self.interval = interval
        self.max_entries = max_entries
        self._seen: dict[Hashable, _Seen] = {}

    def note(self, key: Hashable, now: float) -> int | None:
        """Count one refusal of ``key``; return how many refusals to audit now (this one
        and the ones not audited since the last entry), or ``None`` to audit nothing."""
        seen = self._seen.get(key)
        if seen is None or now - seen.audited_at >= self.interval:
            since = 0 if seen is None else seen.since
            if seen is None:
                self._make_room(now)
                self._seen[key] = _Seen(audited_at=now)
            else:
                seen.audited_at, seen.since = now, 0
            return since + 1
        seen.since += 1
        return None

    def hold(self, key: Hashable, refusal: QuotaExceeded, now: float) -> None:
        """Answer ``key`` with ``refusal`` from memory until its retry time (or
        :data:`RECHECK_S`)."""
        seen = self._seen.get(key)
        if seen is None:
            self._make_room(now)
            seen = self._seen[key] = _Seen(audited_at=now - self.interval)
        seen.hold_until = now + (refusal.retry_after or RECHECK_S)
        seen.refusal = refusal

    def held(self, key: Hashable, now: float) -> QuotaExceeded | None:
        """The refusal ``key`` still gets without asking the store, with its retry time
        brought up to date, or ``None``."""
        seen = self._seen.get(key)
        if seen is None or seen.refusal is None or now >= seen.hold_until:
            return None
        if seen.refusal.retry_after is None:
            return seen.refusal
        return seen.refusal.later(float(int(seen.hold_until - now + 0.999)))

    def _make_room(self, now: float) -> None:
        if len(self._seen) < self.max_entries:
            return
        self._seen = {k: v for k, v in self._seen.items()
                      if now - v.audited_at < self.interval or now < v.hold_until}
        if len(self._seen) >= self.max_entries:
            self._seen.clear()
