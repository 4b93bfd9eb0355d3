"""Every message on the wire, as frozen tagged structs (``docs/protocol.md#messages``).

A frame is one JSON object whose ``"type"`` field names the struct. Decoding validates
types and sizes in one step (msgspec), so a handler only ever sees well-formed values.
Strings, lists and maps carry limits: everything a peer sends is untrusted.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

# -- constrained scalar types -------------------------------------------------------------

Id = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+(?!\n)$")]
"""Message, request and agent identifiers."""
CaseNumber = Annotated[str, Meta(pattern=r"^HW-[0-9]{8}-[0-9]{4,6}(?!\n)$")]
Name = Annotated[str, Meta(min_length=1, max_length=128)]
Text = Annotated[str, Meta(max_length=4096)]
Code = Annotated[str, Meta(max_length=64, pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+(?!\n)$")]
Version = Annotated[int, Meta(ge=1, le=65535)]
Nonce = Annotated[bytes, Meta(min_length=16, max_length=64)]
Signature = Annotated[bytes, Meta(min_length=64, max_length=64)]
PublicKey = Annotated[bytes, Meta(min_length=32, max_length=32)]
Readings = Annotated[dict[str, Any], Meta(max_length=256)]
Timeout = Annotated[float, Meta(gt=0, le=600)]
Timestamp = Annotated[datetime, Meta(tz=True)]
"""Timestamps are always timezone-aware (RFC 3339 with an offset)."""


class Role(StrEnum):
    """Who is on the other end of a connection."""

    AGENT = "agent"
    TECH = "tech"


class Mode(StrEnum):
    """What an agent connection is for: the long-lived session, one call and close, or the
    agent's end of one SSH tunnel (``docs/protocol.md#tunnels``)."""

    RUN = "run"
    CALL = "call"
    TUNNEL = "tunnel"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Category(StrEnum):
    HARDWARE = "hardware"
    SOFTWARE = "software"
    NETWORK = "network"
    CONFIGURATION = "configuration"


class ProbeStatus(StrEnum):
    """``not_available``: the platform does not expose the data (never a guess)."""

    OK = "ok"
    NOT_AVAILABLE = "not_available"
    FAILED = "failed"
    TIMEOUT = "timeout"


class ErrorCode(StrEnum):
    """Codes of :class:`Error` replies (``docs/protocol.md#errors``)."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    AGENT_OFFLINE = "agent_offline"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    INTERNAL = "internal"


class Action(StrEnum):
    """Actions a technician may ask an agent to perform (each needs a signed command)."""

    DIAG = "diag"
    CONSENT = "consent"
    FIX = "fix"
    PLUGINS = "plugins"
    BOOK_VISIT = "book-visit"
    TUNNEL = "tunnel"


class Scope(StrEnum):
    """What a consent grant allows (``docs/security.md#consent``)."""

    DIAGNOSTICS = "diagnostics"
    FIX = "fix"
    PLUGINS = "plugins"
    SHELL = "shell"
    FILES = "files"
    BOOK_VISIT = "book-visit"


class FixDecision(StrEnum):
    """What became of a fix request (``docs/protocol.md#fixes``)."""

    DRY_RUN = "dry-run"            # only the plan was asked for
    APPROVED = "approved"          # the customer approved the plan; it was applied
    NOT_REQUIRED = "not-required"  # the grant said fixes need no approval; it was applied
    DECLINED = "declined"          # the customer declined (or did not answer in time)
    NOT_POSSIBLE = "not-possible"  # unknown fixer, wrong platform, missing privileges


class TicketState(StrEnum):
    """Where an on-site ticket is (``docs/protocol.md#on-site-tickets``)."""

    PROPOSED = "proposed"          # quote and slots offered, nothing booked yet
    BOOKED = "booked"              # the customer accepted a slot; a technician is dispatched
    PREPARED = "prepared"          # parts, tools and documents are ready
    ON_SITE = "on-site"            # the technician is at the customer's (sign-off follows)
    CONFIRMED = "confirmed"        # the customer signed the service confirmation
    FOLLOWED_UP = "followed-up"    # the follow-up call is recorded
    CLOSED = "closed"
    RESCHEDULED = "rescheduled"    # the booking was released; new slots are offered
    CANCELLED = "cancelled"
    NOT_ELIGIBLE = "not-eligible"  # ineligible or not covered: remote alternatives instead


class RootCause(StrEnum):
    """Why the fault happened, recorded at sign-off; it settles the fee."""

    PRODUCT_DEFECT = "product-defect"
    SERVICE_FAILURE = "service-failure"
    CUSTOMER_DEVICE = "customer-device"
    THIRD_PARTY = "third-party"


class VisitDecisionKind(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    CONFIRM = "confirm"


TicketId = Annotated[str, Meta(pattern=r"^TK-[0-9]{8}-[0-9]{4,6}(?!\n)$")]
Money = Annotated[int, Meta(ge=0, le=10_000_000)]
ShortList = Annotated[list[Text], Meta(max_length=64)]


# -- payload values ---------------------------------------------------------------------


class Finding(Struct, frozen=True, forbid_unknown_fields=True):
    """One conclusion drawn from readings (``docs/protocol.md#findings``).

    ``code`` is stable and dotted (``disk.almost_full``); ``category`` is what escalation
    reads; ``remote_fixable`` says whether a fixer can address it remotely.
    """

    code: Code
    severity: Severity
    category: Category
    summary: Text
    summary_zh: Text = ""
    evidence: Readings = {}
    remote_fixable: bool = False
    fixers: Annotated[list[Code], Meta(max_length=16)] = []


class ProbeReport(Struct, frozen=True, forbid_unknown_fields=True):
    """What one probe read and concluded."""

    probe: Name
    version: Name
    status: ProbeStatus
    readings: Readings = {}
    findings: Annotated[list[Finding], Meta(max_length=256)] = []
    duration_ms: Annotated[float, Meta(ge=0)] = 0.0
    error: Text = ""


class FixPlanInfo(Struct, frozen=True, forbid_unknown_fields=True):
    """A fixer's dry run: exactly what would change, and whether it can be undone."""

    fixer: Code
    summary: Text
    reversible: bool
    changes: Annotated[list[Text], Meta(max_length=500)] = []
    summary_zh: Text = ""
    needs_privileges: Text = ""


class FixReport(Struct, frozen=True, forbid_unknown_fields=True):
    """Plan, the customer's decision, and (when applied) the outcome and its verification."""

    decision: FixDecision
    plan: FixPlanInfo | None = None
    applied: bool = False
    ok: bool = False
    outcome: Text = ""
    verified: bool = False
    verify_note: Text = ""
    details: Readings = {}


class PluginInfo(Struct, frozen=True, forbid_unknown_fields=True):
    """A probe or fixer installed on an agent."""

    kind: Literal["probe", "fixer"]
    name: Name
    version: Name
    summary: Text = ""
    addresses: Annotated[list[Code], Meta(max_length=64)] = []


class AgentInfo(Struct, frozen=True, forbid_unknown_fields=True):
    agent_id: Id
    customer: Name
    kind: Name
    city: Name
    hostname: Name
    os: Name
    online: bool
    last_seen: Timestamp | None


class CaseInfo(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A case as technicians see it; ``owner`` (version 3, omitted when ``None``): the
    technician who owns it, ``None`` for the unassigned queue."""

    number: CaseNumber
    agent_id: Id
    customer: Name
    description: Text
    state: Name
    opened_at: Timestamp
    updated_at: Timestamp
    owner: Name | None = None


class CaseEvent(Struct, frozen=True, forbid_unknown_fields=True):
    state: Name
    at: Timestamp
    actor: Name
    note: Text = ""


class StoredResult(Struct, frozen=True, forbid_unknown_fields=True):
    msg_id: Id
    request_id: Id
    action: Action
    ok: bool
    received_at: Timestamp
    reports: Annotated[list[ProbeReport], Meta(max_length=128)] = []
    error: Text = ""
    fix: FixReport | None = None


class PriceItem(Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    amount: int


class SlotOffer(Struct, frozen=True, forbid_unknown_fields=True):
    """One proposed appointment with its own price (urgent/overtime change it)."""

    start: Timestamp
    end: Timestamp
    total: Money
    urgent: bool = False
    overtime: bool = False


class TicketInfo(Struct, frozen=True, forbid_unknown_fields=True):
    """An on-site ticket (``docs/protocol.md#on-site-tickets``). Amounts are whole ``currency``.

    ``slots`` are the offered appointments; ``booked_*`` the accepted one. Sign-off fills
    ``resolved``/``root_cause``/``fee``; the customer's signature sets ``confirmed``.
    """

    ticket: TicketId
    case: CaseNumber
    agent_id: Id
    customer: Name
    state: TicketState
    created_at: Timestamp
    updated_at: Timestamp
    reason: Text
    service: Name
    city: Name
    tier: Name
    eligible: bool
    covered: bool
    provisional: bool
    currency: Name
    reasons: ShortList = []
    alternatives: ShortList = []
    price_items: Annotated[list[PriceItem], Meta(max_length=32)] = []
    total: Money | None = None
    free_visit: bool = False
    slots: Annotated[list[SlotOffer], Meta(max_length=3)] = []
    booked_start: Timestamp | None = None
    booked_end: Timestamp | None = None
    technician: Name | None = None
    accepted_by: Name | None = None
    preparation: ShortList = []
    checklist: ShortList = []
    findings: Annotated[list[Finding], Meta(max_length=64)] = []
    fixes: ShortList = []
    resolved: bool | None = None
    root_cause: RootCause | None = None
    signoff_note: Text = ""
    fee: Money | None = None
    confirmed: bool = False
    followup_due: date | None = None
    followup_resolved: bool | None = None
    satisfaction: Annotated[int, Meta(ge=1, le=5)] | None = None
    history: Annotated[list[CaseEvent], Meta(max_length=256)] = []
    ics: Annotated[str, Meta(max_length=16384)] = ""


class VisitDecision(Struct, frozen=True, forbid_unknown_fields=True):
    """What the customer decided about a ticket, as the agent signs it.

    ``accept``: ``start`` is the chosen slot and ``total`` its price; ``confirm``: the
    customer confirms the sign-off (``resolved``, ``root_cause``, ``fee``) as shown.
    """

    ticket: TicketId
    case: CaseNumber
    agent_id: Id
    decision: VisitDecisionKind
    at: Timestamp
    start: Timestamp | None = None
    total: Money | None = None
    resolved: bool | None = None
    root_cause: RootCause | None = None
    fee: Money | None = None
    note: Text = ""


class SignedVisit(Struct, frozen=True, forbid_unknown_fields=True):
    """A :class:`VisitDecision` (JSON in ``payload``) signed by the agent's key."""

    payload: Annotated[bytes, Meta(max_length=8192)]
    signature: Signature


class SignedCommand(Struct, frozen=True, forbid_unknown_fields=True):
    """A technician's command: ``payload`` is the JSON of a :class:`proto.command.Command`,
    ``signature`` is Ed25519 by the key in ``certificate`` over the context and ``payload``
    (``docs/protocol.md#signed-commands``). The server relays it; the agent verifies it."""

    payload: Annotated[bytes, Meta(max_length=65536)]
    certificate: Annotated[str, Meta(max_length=8192)]
    signature: Signature


class ConsentGrant(Struct, frozen=True, forbid_unknown_fields=True):
    """What the customer allowed, as the agent attests it in a signed receipt."""

    receipt_id: Id
    agent_id: Id
    case: CaseNumber
    tech: Name
    scopes: Annotated[list[Scope], Meta(max_length=8)]
    granted_at: Timestamp
    expires_at: Timestamp
    via: Name
    tech_fingerprint: Annotated[str, Meta(max_length=128)] = ""
    fix_needs_approval: bool = True
    revoked_at: Timestamp | None = None


class SignedReceipt(Struct, frozen=True, forbid_unknown_fields=True):
    """A :class:`ConsentGrant` (JSON in ``payload``) signed by the agent's key."""

    payload: Annotated[bytes, Meta(max_length=8192)]
    signature: Signature


# -- handshake (docs/protocol.md#handshake) ----------------------------------------------


class Hello(Struct, frozen=True, forbid_unknown_fields=True, tag="hello", tag_field="type"):
    """First message of a client. Offers the protocol versions it speaks.

    An agent names its ``agent_id``; a technician its ``name`` and OpenSSH ``certificate``.
    """

    role: Role
    min_version: Version
    max_version: Version
    software: Name
    agent_id: Id | None = None
    mode: Mode = Mode.RUN
    name: Name | None = None
    certificate: Annotated[str, Meta(max_length=8192)] | None = None
    tunnel: Id | None = None


class Enroll(Struct, frozen=True, forbid_unknown_fields=True, tag="enroll", tag_field="type"):
    """First message of a new agent: redeems a one-time token for an identity."""

    min_version: Version
    max_version: Version
    software: Name
    secret: Annotated[bytes, Meta(min_length=16, max_length=64)]
    public_key: PublicKey
    hostname: Name
    os: Name


class Challenge(Struct, frozen=True, forbid_unknown_fields=True, tag="challenge",
                tag_field="type"):
    """Server's reply to :class:`Hello`: the chosen version and a fresh nonce to sign."""

    version: Version
    nonce: Nonce
    server_time: Timestamp


class Proof(Struct, frozen=True, forbid_unknown_fields=True, tag="proof", tag_field="type"):
    """Ed25519 signature over :func:`proto.session.proof_payload`."""

    signature: Signature


class Welcome(Struct, frozen=True, forbid_unknown_fields=True, tag="welcome", tag_field="type"):
    """The client is authenticated and the session is ready."""

    session_id: Id
    identity: Name
    server_time: Timestamp


class Enrolled(Struct, frozen=True, forbid_unknown_fields=True, tag="enrolled",
               tag_field="type"):
    """Enrollment succeeded; the connection closes after this."""

    version: Version
    agent_id: Id
    customer: Name


# -- agent session -------------------------------------------------------------------------


class OpenCase(Struct, frozen=True, forbid_unknown_fields=True, tag="open_case",
               tag_field="type"):
    """The customer asks for help. ``id`` makes a retry idempotent."""

    id: Id
    description: Text


class CaseOpened(Struct, frozen=True, forbid_unknown_fields=True, tag="case_opened",
                 tag_field="type"):
    re: Id
    case: CaseNumber
    opened_at: Timestamp


class Request(Struct, frozen=True, forbid_unknown_fields=True, tag="request", tag_field="type"):
    """Server -> agent: perform ``action`` for ``case`` on behalf of technician ``tech``."""

    id: Id
    case: CaseNumber
    action: Action
    tech: Name
    timeout: Timeout = 30.0
    command: SignedCommand | None = None
    via: Annotated[str, Meta(max_length=512)] | None = None


class Result(Struct, frozen=True, forbid_unknown_fields=True, tag="result", tag_field="type"):
    """Agent -> server: the outcome of :class:`Request` ``re``.

    ``id`` is unique per result and stable across resends (durable outbox), so the server
    stores each result once however many times it arrives.
    """

    id: Id
    re: Id
    case: CaseNumber
    action: Action
    ok: bool
    reports: Annotated[list[ProbeReport], Meta(max_length=128)] = []
    error_code: ErrorCode | None = None
    error: Text = ""
    receipt: SignedReceipt | None = None
    fix: FixReport | None = None
    plugins: Annotated[list[PluginInfo], Meta(max_length=1000)] = []


class ConsentUpdate(Struct, frozen=True, forbid_unknown_fields=True, tag="consent_update",
                    tag_field="type"):
    """Agent -> server: a signed consent receipt (a grant or its revocation), via the outbox.
    ``id`` is the receipt id; the server stores each once and answers :class:`Ack`."""

    id: Id
    receipt: SignedReceipt


class Revocations(Struct, frozen=True, forbid_unknown_fields=True, tag="revocations",
                  tag_field="type"):
    """Server -> agent: fingerprints of revoked technician keys (the whole current list)."""

    fingerprints: Annotated[list[Annotated[str, Meta(max_length=128)]],
                            Meta(max_length=10000)]


class SignedRevocations(Struct, frozen=True, forbid_unknown_fields=True,
                        tag="signed_revocations", tag_field="type"):
    """Server -> agent (version 3): the organisation-signed revocation list, as the server
    got it (``docs/security.md#revocation-lists``).

    ``payload`` is the canonical JSON of :class:`proto.revocation.RevocationList`;
    ``signature`` the organisation key's Ed25519 signature over
    ``b"helloword-revocations-v1\\0" + payload``. The server cannot make one; the agent
    verifies it against the organisation key pinned at enrollment (:mod:`proto.revocation`).
    """

    payload: Annotated[bytes, Meta(min_length=2, max_length=768 * 1024)]
    signature: Signature


class Ack(Struct, frozen=True, forbid_unknown_fields=True, tag="ack", tag_field="type"):
    """Server -> agent: result ``re`` is durably stored; drop it from the outbox."""

    re: Id


# -- technician session ------------------------------------------------------------------


#: Most agents one ``agent_list`` page carries (a page stays well under one frame).
AGENT_PAGE = 1000


class ListAgents(Struct, frozen=True, forbid_unknown_fields=True, tag="list_agents",
                 tag_field="type", omit_defaults=True):
    """Enrolled agents in enrollment order, one page at a time (``offset``, ``limit``);
    optionally only one customer's, or only online (``True``) or offline (``False``) ones."""

    id: Id
    customer: Name | None = None
    online: bool | None = None
    offset: Annotated[int, Meta(ge=0)] = 0
    limit: Annotated[int, Meta(ge=1, le=AGENT_PAGE)] = AGENT_PAGE


#: Most cases one ``case_list`` page carries (a page of brief cases stays under one frame).
CASE_PAGE = 500


class ListCases(Struct, frozen=True, forbid_unknown_fields=True, tag="list_cases",
                tag_field="type", omit_defaults=True):
    """Cases newest first, one page at a time (``offset``, ``limit``); optionally only
    those in ``state``, of one ``customer``, owned by ``owner`` or ``unassigned``.
    ``customer``, ``offset``, ``limit``, ``owner`` and ``unassigned`` are version 3 (omitted
    at their defaults, so a version-2 server never sees them). A ``remote`` technician gets
    only their own cases and the unassigned queue whatever the filter
    (``docs/security.md#case-owners``)."""

    id: Id
    state: Name | None = None
    customer: Name | None = None
    offset: Annotated[int, Meta(ge=0, le=2**31)] = 0
    limit: Annotated[int, Meta(ge=1, le=CASE_PAGE)] = CASE_PAGE
    owner: Name | None = None
    unassigned: bool = False


class GetCase(Struct, frozen=True, forbid_unknown_fields=True, tag="get_case",
              tag_field="type"):
    id: Id
    case: CaseNumber


class ClaimCase(Struct, frozen=True, forbid_unknown_fields=True, tag="claim_case",
                tag_field="type"):
    """Tech -> server (version 3): take the unassigned ``case`` for oneself."""

    id: Id
    case: CaseNumber


class AssignCase(Struct, frozen=True, forbid_unknown_fields=True, tag="assign_case",
                 tag_field="type"):
    """Tech -> server (version 3): give ``case`` to technician ``to``: a supervisor assigns
    any case, an owner transfers their own."""

    id: Id
    case: CaseNumber
    to: Annotated[str, Meta(min_length=1, max_length=100)]


class CaseOwner(Struct, frozen=True, forbid_unknown_fields=True, tag="case_owner",
                tag_field="type", omit_defaults=True):
    """Server -> tech (version 3): reply to :class:`ClaimCase` and :class:`AssignCase`;
    ``previous``: the owner before (``None``: it was unassigned)."""

    re: Id
    case: CaseInfo
    previous: Name | None = None


class RunDiag(Struct, frozen=True, forbid_unknown_fields=True, tag="run_diag",
              tag_field="type"):
    """Run the diagnostic probes on the agent that owns ``case``; the probes to run, if not
    all, are in ``command``'s signed ``args.probes``."""

    id: Id
    case: CaseNumber
    command: SignedCommand
    timeout: Timeout = 60.0


class RunFix(Struct, frozen=True, forbid_unknown_fields=True, tag="run_fix", tag_field="type"):
    """Plan or apply a fixer on the case's agent; the fixer, its arguments and ``dry_run``
    are in ``command``'s signed args."""

    id: Id
    case: CaseNumber
    command: SignedCommand
    timeout: Timeout = 300.0


class ListPlugins(Struct, frozen=True, forbid_unknown_fields=True, tag="list_plugins",
                  tag_field="type"):
    """The probes and fixers on the case's agent (``command`` has action ``plugins``)."""

    id: Id
    case: CaseNumber
    command: SignedCommand
    timeout: Timeout = 30.0


class AskConsent(Struct, frozen=True, forbid_unknown_fields=True, tag="ask_consent",
                 tag_field="type"):
    """Ask the case's customer for a grant; ``command`` (action ``consent``) carries the
    scopes and duration in its args, signed, so the customer sees who really asks."""

    id: Id
    case: CaseNumber
    command: SignedCommand
    timeout: Timeout = 120.0


class AgentList(Struct, frozen=True, forbid_unknown_fields=True, tag="agent_list",
                tag_field="type", omit_defaults=True):
    """One page of agents; ``next_offset``: ask again with it for the next page (``None``:
    this was the last)."""

    re: Id
    agents: Annotated[list[AgentInfo], Meta(max_length=AGENT_PAGE)]
    next_offset: int | None = None


class CaseList(Struct, frozen=True, forbid_unknown_fields=True, tag="case_list",
               tag_field="type", omit_defaults=True):
    """One page of cases; ``next_offset`` (version 3): ask again with it for the next page
    (``None``: this was the last)."""

    re: Id
    cases: Annotated[list[CaseInfo], Meta(max_length=CASE_PAGE)]
    next_offset: int | None = None


class CaseDetail(Struct, frozen=True, forbid_unknown_fields=True, tag="case_detail",
                 tag_field="type"):
    re: Id
    case: CaseInfo
    history: list[CaseEvent]
    results: list[StoredResult]


class DiagDone(Struct, frozen=True, forbid_unknown_fields=True, tag="diag_done",
               tag_field="type"):
    re: Id
    case: CaseNumber
    result: StoredResult


# -- on-site tickets (docs/protocol.md#on-site-tickets) -----------------------------------


class EscalateCase(Struct, frozen=True, forbid_unknown_fields=True, tag="escalate_case",
                   tag_field="type"):
    """Tech -> server: turn ``case`` into an on-site ticket by hand, with a reason."""

    id: Id
    case: CaseNumber
    reason: Annotated[str, Meta(min_length=1, max_length=4096)]
    service: Name = "hardware-repair"


class ListTickets(Struct, frozen=True, forbid_unknown_fields=True, tag="list_tickets",
                  tag_field="type"):
    id: Id
    state: TicketState | None = None
    followup_due: bool = False


class GetTicket(Struct, frozen=True, forbid_unknown_fields=True, tag="get_ticket",
                tag_field="type"):
    id: Id
    ticket: TicketId


class OfferVisit(Struct, frozen=True, forbid_unknown_fields=True, tag="offer_visit",
                 tag_field="type"):
    """Tech -> server: show the ticket's quote and slots to the customer through the agent.
    ``command`` (action ``book-visit``) carries them in its signed args."""

    id: Id
    ticket: TicketId
    case: CaseNumber
    command: SignedCommand
    timeout: Timeout = 30.0


class BookVisit(Struct, frozen=True, forbid_unknown_fields=True, tag="book_visit",
                tag_field="type"):
    """Tech -> server: record an acceptance the customer gave another way (phone)."""

    id: Id
    ticket: TicketId
    start: Timestamp
    accepted_by: Name


class UpdateTicket(Struct, frozen=True, forbid_unknown_fields=True, tag="update_ticket",
                   tag_field="type"):
    """Tech -> server: move a ticket to ``to``. Sign-off is ``to=on-site`` with ``resolved``
    and ``root_cause``; the follow-up call is ``to=followed-up`` with ``resolved`` and
    ``satisfaction``."""

    id: Id
    ticket: TicketId
    to: TicketState
    note: Text = ""
    resolved: bool | None = None
    root_cause: RootCause | None = None
    satisfaction: Annotated[int, Meta(ge=1, le=5)] | None = None


class TicketList(Struct, frozen=True, forbid_unknown_fields=True, tag="ticket_list",
                 tag_field="type"):
    re: Id
    tickets: list[TicketInfo]


class TicketDetail(Struct, frozen=True, forbid_unknown_fields=True, tag="ticket_detail",
                   tag_field="type"):
    re: Id
    ticket: TicketInfo


class GetVisits(Struct, frozen=True, forbid_unknown_fields=True, tag="get_visits",
                tag_field="type"):
    """Agent -> server: the on-site tickets of this agent's cases."""

    id: Id


class VisitUpdate(Struct, frozen=True, forbid_unknown_fields=True, tag="visit_update",
                  tag_field="type"):
    """Agent -> server: the customer's signed decision (accept a slot, decline, confirm)."""

    id: Id
    signed: SignedVisit


class VisitList(Struct, frozen=True, forbid_unknown_fields=True, tag="visit_list",
                tag_field="type"):
    """Server -> agent: reply to :class:`GetVisits` and :class:`VisitUpdate`."""

    re: Id
    visits: list[TicketInfo]
    message: Text = ""


# -- both directions ---------------------------------------------------------------------


class FixDone(Struct, frozen=True, forbid_unknown_fields=True, tag="fix_done",
              tag_field="type"):
    """Server -> tech: the stored result of :class:`RunFix`; ``result.fix`` has the report."""

    re: Id
    case: CaseNumber
    result: StoredResult


class PluginList(Struct, frozen=True, forbid_unknown_fields=True, tag="plugin_list",
                 tag_field="type"):
    """Server -> tech: reply to :class:`ListPlugins`."""

    re: Id
    case: CaseNumber
    plugins: list[PluginInfo]


class ConsentAnswer(Struct, frozen=True, forbid_unknown_fields=True, tag="consent_answer",
                    tag_field="type"):
    """Server -> tech: the customer's answer to :class:`AskConsent`."""

    re: Id
    case: CaseNumber
    granted: bool
    message: Text
    grant: ConsentGrant | None = None


class Error(Struct, frozen=True, forbid_unknown_fields=True, tag="error", tag_field="type"):
    """A request could not be served. ``message`` says what happened and what to do."""

    re: Id | None
    code: ErrorCode
    message: Text


class Bye(Struct, frozen=True, forbid_unknown_fields=True, tag="bye", tag_field="type"):
    """Orderly end of a session (the websocket close follows)."""

    reason: Text = ""


# -- fan-out (docs/protocol.md#fan-out) ---------------------------------------------------

#: Most agents one fan-out reaches (ids in a :class:`FanoutDone` must fit one frame).
MAX_FANOUT = 25_000


class Fanout(Struct, frozen=True, forbid_unknown_fields=True, tag="fanout", tag_field="type"):
    """Technician -> server: send one signed fan-out command (``command.payload`` is a
    :class:`proto.command.FanoutCommand`) to every online agent of its audience; answer
    when all have answered or ``timeout`` seconds have passed."""

    id: Id
    command: SignedCommand
    timeout: Timeout = 10.0


class Ping(Struct, frozen=True, forbid_unknown_fields=True, tag="ping", tag_field="type"):
    """Server -> agent: fan-out ``id``'s signed command; the agent checks it and answers
    :class:`Pong`."""

    id: Id
    command: SignedCommand


class Pong(Struct, frozen=True, forbid_unknown_fields=True, tag="pong", tag_field="type"):
    """Agent -> server: the answer to :class:`Ping` ``re``: checked and here (``ok``), or
    refused with the refusal reason and its message."""

    re: Id
    ok: bool
    reason: Annotated[str, Meta(max_length=64)] = ""
    error: Text = ""


class FanoutMiss(Struct, frozen=True, forbid_unknown_fields=True):
    """An agent of a fan-out that did not answer ``ok``: ``reason`` is the agent's refusal
    reason, ``no_answer`` (nothing within the timeout), ``gone`` (disconnected),
    ``unsupported`` (speaks protocol version 1) or ``node_unreachable`` (its node did not
    answer)."""

    agent_id: Id
    reason: Annotated[str, Meta(max_length=64)]


class FanoutDone(Struct, frozen=True, forbid_unknown_fields=True, tag="fanout_done",
                 tag_field="type"):
    """Server -> technician: fan-out ``re`` is over. ``sent``: online agents of the
    audience it went to (on every node); ``ok``: those that checked the signed command and
    answered; ``counts``: every other one, by reason; ``misses``: those agents by name, as
    many as fit 512 KiB (``unlisted``: how many more); ``seconds``: from the first send to
    the last answer (or the timeout)."""

    re: Id
    audience: Annotated[str, Meta(max_length=140)]
    sent: int
    ok: int
    seconds: float
    misses: Annotated[list[FanoutMiss], Meta(max_length=MAX_FANOUT)] = []
    counts: Annotated[dict[Annotated[str, Meta(max_length=64)], int],
                      Meta(max_length=64)] = {}
    unlisted: int = 0


# -- SSH tunnels (docs/protocol.md#tunnels) -----------------------------------------------


class RecordingKind(StrEnum):
    """What a session recording holds."""

    SHELL = "shell"  # asciicast v2 of what the session printed
    SFTP = "sftp"    # one JSON line per file operation (path, operation, bytes), no contents


#: Largest recording carried in one frame (bytes before base64); longer ones are cut.
MAX_RECORDING = 512 * 1024


class OpenTunnel(Struct, frozen=True, forbid_unknown_fields=True, tag="open_tunnel",
                 tag_field="type"):
    """Tech -> server: open an SSH tunnel to the case's agent. ``command`` has action
    ``tunnel``. After the :class:`TunnelOpen` reply the connection carries only binary
    frames (the SSH stream) until either side closes."""

    id: Id
    case: CaseNumber
    command: SignedCommand
    timeout: Timeout = 30.0


class TunnelOpen(Struct, frozen=True, forbid_unknown_fields=True, tag="tunnel_open",
                 tag_field="type"):
    """Server -> tech: the agent accepted the tunnel; binary frames follow. ``host_key`` is
    the agent's enrolled Ed25519 key in OpenSSH form, from the server's store: the key the
    agent's SSH server presents."""

    re: Id
    case: CaseNumber
    tunnel: Id
    host_key: Annotated[str, Meta(max_length=512)]


#: Largest stored recording as served to a technician: a recording sealed at rest
#: (:mod:`proto.sealed`) is its plaintext plus the seal's header and tag.
MAX_SEALED_RECORDING = MAX_RECORDING + 256


class Recording(Struct, frozen=True, forbid_unknown_fields=True, tag="recording",
                tag_field="type", omit_defaults=True):
    """Agent -> server, via the outbox: the record of one tunnel session. The server stores
    it once per ``id`` and answers :class:`Ack`, or :class:`Error` ``refused`` for good.

    ``tunnel`` (v3): the id of the tunnel the session ran in (the ``tunnel`` request's id);
    the server keeps the recording only for a tunnel it brokered to this agent, attributed
    from its own record of that tunnel. Omitted when ``None`` (a v2 server rejects it)."""

    id: Id
    case: CaseNumber
    tech: Name
    kind: RecordingKind
    started_at: Timestamp
    ended_at: Timestamp
    data: Annotated[bytes, Meta(max_length=MAX_RECORDING)]
    truncated: bool = False
    tunnel: Id | None = None


class RecordingInfo(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A stored recording, without its data. ``size`` and ``sha256`` are of the recording
    as the agent sent it (the plaintext). v3 fields, omitted at their defaults: ``sealed``
    (the data is sealed to the recording key, :mod:`proto.sealed`), ``agent`` and
    ``tunnel`` (needed to open it; ``tunnel`` is ``null`` for recordings from before
    tunnels were recorded)."""

    id: Id
    case: CaseNumber
    tech: Name
    kind: RecordingKind
    started_at: Timestamp
    ended_at: Timestamp | None
    size: Annotated[int, Meta(ge=0)]
    sha256: Annotated[str, Meta(max_length=64)]
    sealed: bool = False
    agent: Id | None = None
    tunnel: Id | None = None


class GetRecording(Struct, frozen=True, forbid_unknown_fields=True, tag="get_recording",
                   tag_field="type"):
    """Tech -> server: the recordings of ``case``, and the data of ``recording`` (default:
    the newest)."""

    id: Id
    case: CaseNumber
    recording: Id | None = None


class RecordingData(Struct, frozen=True, forbid_unknown_fields=True, tag="recording_data",
                    tag_field="type"):
    """Server -> tech: reply to :class:`GetRecording`; ``info``/``data`` are ``null``/empty
    when the case has no recording."""

    re: Id
    case: CaseNumber
    recordings: Annotated[list[RecordingInfo], Meta(max_length=500)]
    info: RecordingInfo | None = None
    data: Annotated[bytes, Meta(max_length=MAX_SEALED_RECORDING)] = b""


AnyMessage = (
    Hello | Enroll | Challenge | Proof | Welcome | Enrolled
    | OpenCase | CaseOpened | Request | Result | ConsentUpdate | Revocations | SignedRevocations
    | Ack
    | ListAgents | ListCases | GetCase | RunDiag | RunFix | ListPlugins | AskConsent
    | AgentList | CaseList | CaseDetail | DiagDone | FixDone | PluginList | ConsentAnswer
    | EscalateCase | ListTickets | GetTicket | OfferVisit | BookVisit | UpdateTicket
    | TicketList | TicketDetail | GetVisits | VisitUpdate | VisitList
    | OpenTunnel | TunnelOpen | Recording | GetRecording | RecordingData
    | Fanout | Ping | Pong | FanoutDone
    | ClaimCase | AssignCase | CaseOwner
    | Error | Bye
)
"""Union of every message; :func:`proto.codec.decode` returns one of these."""

ALL_MESSAGES: tuple[type[Struct], ...] = (
    Hello, Enroll, Challenge, Proof, Welcome, Enrolled,
    OpenCase, CaseOpened, Request, Result, ConsentUpdate, Revocations, SignedRevocations, Ack,
    ListAgents, ListCases, GetCase, RunDiag, RunFix, ListPlugins, AskConsent,
    AgentList, CaseList, CaseDetail, DiagDone, FixDone, PluginList, ConsentAnswer,
    EscalateCase, ListTickets, GetTicket, OfferVisit, BookVisit, UpdateTicket,
    TicketList, TicketDetail, GetVisits, VisitUpdate, VisitList,
    OpenTunnel, TunnelOpen, Recording, GetRecording, RecordingData,
    Fanout, Ping, Pong, FanoutDone,
    ClaimCase, AssignCase, CaseOwner,
    Error, Bye,
)

Direction = Literal["agent->server", "server->agent", "tech->server", "server->tech"]
