"""Who may see and do what on ``/tech``: roles, case owners, recordings, visits.

The table of which role may send which request is :mod:`proto.roles` (the agent applies the
same table to the commands it runs); this module adds what needs the store's word, for one
connection's :class:`Caller` (``docs/security.md#roles``, ``#case-owners``):

- a technician holding only ``remote`` (of the roles that see cases) sees the cases they own
  and the unassigned queue; ``desk``, ``supervisor`` and ``auditor`` see every case;
- acting on a case (a command to its agent, a tunnel, an escalation) needs the case to be
  the caller's own or unassigned (the first work done on it then claims it), unless
  the caller is a ``supervisor``, or the action is the desk's (``offer_visit``, a
  ``book-visit`` consent request, an escalation by the desk);
- a recording is readable by the technician of its session, supervisors and auditors;
- tickets: ``desk``, ``supervisor`` and ``auditor`` see every ticket; a ``remote``
  technician sees the tickets of the cases they may read (their own and the unassigned
  queue: a ticket carries the customer, the city, the reason and the findings), a ``field``
  technician the visits booked for them; only the desk, a supervisor or the visit's field
  technician moves a ticket;
- agents: a technician who does not see every case lists only the agents of the cases they
  may read (a fan-out goes to the agents connected, not to this listing).

One team per server: "all cases of the team" is every case of this server.
"""

from __future__ import annotations

from collections.abc import Collection
from contextvars import ContextVar
from dataclasses import dataclass

import msgspec

from proto import messages as m
from proto.command import Command
from proto.roles import DESK_SCOPES, Role, describe

from .store import CaseRecord

#: Roles that see every case (list and read).
SEE_ALL_CASES: frozenset[Role] = frozenset({Role.DESK, Role.SUPERVISOR, Role.AUDITOR})
#: Roles that act on any case, whoever owns it.
ACT_ON_ANY_CASE: frozenset[Role] = frozenset({Role.SUPERVISOR})
#: Roles that see every ticket (others: their own visits, and with ``remote`` the tickets
#: of the cases they may read).
SEE_ALL_TICKETS: frozenset[Role] = frozenset({Role.DESK, Role.SUPERVISOR, Role.AUDITOR})
#: Roles that move any ticket along (others: the visits booked for them).
UPDATE_ANY_TICKET: frozenset[Role] = frozenset({Role.DESK, Role.SUPERVISOR})
#: Roles that read every recording (others: their own sessions').
READ_ALL_RECORDINGS: frozenset[Role] = frozenset({Role.SUPERVISOR, Role.AUDITOR})
#: Requests that act on a case for the remote role: the first one done on an unassigned
#: case (the agent did it, the customer granted it) claims it for the caller.
REMOTE_WORK: tuple[type, ...] = (m.RunDiag, m.RunFix, m.ListPlugins, m.AskConsent,
                                 m.EscalateCase)


@dataclass(frozen=True)
class Caller:
    """The technician of one ``/tech`` connection, as their certificate says."""

    name: str
    key: str
    """Fingerprint of the key that authenticated the connection."""
    roles: frozenset[Role]
    version: int
    """The connection's protocol version (v3-only fields are not sent to older ones)."""

    def has(self, roles: Collection[Role]) -> bool:
        return bool(self.roles & frozenset(roles))

    @property
    def sees_all_cases(self) -> bool:
        return self.has(SEE_ALL_CASES)


#: The caller of the connection a request task serves (set once per connection by
#: :meth:`server.tech_gateway.TechGateway.serve`; each request task inherits it).
CALLER: ContextVar[Caller] = ContextVar("hw_tech_caller")


def read_refusal(caller: Caller, case: CaseRecord) -> str | None:
    """Why ``caller`` may not read ``case`` (detail, results, history), or ``None``."""
    if caller.sees_all_cases or case.owner in (None, caller.name):
        return None
    return (f"case {case.number} is owned by {case.owner}, and the {describe(caller.roles)} "
            "role sees only its own cases and the unassigned queue; ask a supervisor to "
            f"assign it to you (`hw-tech assign {case.number} {caller.name}`)")


def act_refusal(caller: Caller, case: CaseRecord, msg: m.AnyMessage) -> str | None:
    """Why ``caller`` may not do ``msg`` on ``case`` (whoever owns it), or ``None``.

    The desk's own work (an on-site offer, a ``book-visit`` consent request, an escalation
    by a technician with the desk role) is allowed on any case; everything else needs the
    case to be the caller's or unassigned, or the supervisor role.
    """
    if caller.has(ACT_ON_ANY_CASE) or case.owner in (None, caller.name):
        return None
    if Role.DESK in caller.roles and (isinstance(msg, m.OfferVisit | m.EscalateCase)
                                      or desk_consent(msg)):
        return None
    return (f"case {case.number} is owned by {case.owner}; only its owner or a supervisor "
            f"works on it; ask a supervisor to assign it to you "
            f"(`hw-tech assign {case.number} {caller.name}`) or {case.owner} to transfer it")


def claims(caller: Caller, case: CaseRecord, msg: m.AnyMessage) -> bool:
    """Whether ``msg``, once done, claims the unassigned ``case`` for ``caller``."""
    return (case.owner is None and Role.REMOTE in caller.roles
            and isinstance(msg, REMOTE_WORK) and not desk_consent(msg))


def consent_scopes(msg: m.AskConsent) -> list[str]:
    """The scopes a consent request's signed command asks for (``[]`` if unreadable: the
    relay refuses such a command anyway)."""
    try:
        command = msgspec.json.decode(msg.command.payload, type=Command)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    scopes = command.args.get("scopes")
    return [str(s) for s in scopes] if isinstance(scopes, list) else []


def desk_consent(msg: m.AnyMessage) -> bool:
    """A consent request for the ``book-visit`` scope only (the desk's)."""
    if not isinstance(msg, m.AskConsent):
        return False
    scopes = consent_scopes(msg)
    return bool(scopes) and set(scopes) <= DESK_SCOPES


def recording_refusal(caller: Caller, tech: str, recording: str) -> str | None:
    """Why ``caller`` may not read a recording of ``tech``'s session, or ``None``."""
    if caller.has(READ_ALL_RECORDINGS) or tech == caller.name:
        return None
    return (f"recording {recording} is of {tech}'s session; recordings are readable by "
            "the session's technician, supervisors and auditors only")


@dataclass(frozen=True)
class TicketScope:
    """The tickets one technician may see, as filters of the store's query
    (:meth:`server.onsite.tickets.OnsiteDesk.tickets`): booked for ``visits_of``, or of a
    case ``cases_of`` owns or that is unassigned."""

    visits_of: str
    cases_of: str | None


def ticket_scope(caller: Caller) -> TicketScope | None:
    """Which tickets ``caller`` sees (``None``: all of them)."""
    if caller.has(SEE_ALL_TICKETS):
        return None
    return TicketScope(visits_of=caller.name,
                       cases_of=caller.name if Role.REMOTE in caller.roles else None)


def ticket_needs_case(caller: Caller, ticket: m.TicketInfo) -> bool:
    """Whether :func:`ticket_refusal` needs the ticket's case to decide."""
    scope = ticket_scope(caller)
    return (scope is not None and scope.cases_of is not None
            and ticket.technician != caller.name)


def ticket_refusal(caller: Caller, ticket: m.TicketInfo, case: CaseRecord | None = None
                   ) -> str | None:
    """Why ``caller`` may not see ``ticket`` (of ``case``, which a remote technician's
    check needs: :func:`ticket_needs_case`), or ``None``."""
    scope = ticket_scope(caller)
    if scope is None or ticket.technician == caller.name:
        return None
    if scope.cases_of is not None and case is not None:
        why = read_refusal(caller, case)
        if why is None:
            return None
        return f"ticket {ticket.ticket}: {why}"
    return (f"ticket {ticket.ticket} is not booked for {caller.name}; the field role sees "
            "only its own visits")


def ticket_update_refusal(caller: Caller, ticket: m.TicketInfo) -> str | None:
    """Why ``caller`` may not move ``ticket`` along, or ``None``: the desk, a supervisor
    or the field technician of the visit do (seeing a ticket of one's case is not enough)."""
    if caller.has(UPDATE_ANY_TICKET) or ticket.technician == caller.name:
        return None
    return (f"ticket {ticket.ticket} is not booked for {caller.name}; only the desk, a "
            "supervisor or the visit's field technician moves it along")


def agents_scope(caller: Caller) -> str | None:
    """Whose cases' agents ``caller`` lists (:meth:`server.store.Store.list_agents`'s
    ``with_cases_of``), or ``None``: every agent, for the roles that see every case."""
    return None if caller.sees_all_cases else caller.name
