"""Technician roles, carried in the technician's OpenSSH certificate.

The organisation key certifies a technician's key together with the roles the technician
holds, as the certificate extension :data:`ROLES_EXTENSION` whose value is the roles
separated by commas (``remote,desk``). Stock ``ssh-keygen`` writes it::

    ssh-keygen -s org.key -I helloword-tech:alice -n alice -V +90d \\
        -O clear -O extension:roles@helloword.cn=remote tech.key.pub

The server checks the roles for every request and the agent for everything that runs on
the customer's machine (``docs/security.md#roles``). Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum


class Role(StrEnum):
    """What a technician is for (least privilege: each role allows only its own work)."""

    REMOTE = "remote"
    """Diagnose, fix, shell, screen on a customer's machine, within the customer's grant."""
    DESK = "desk"
    """The service desk: phone intake, booking, dispatch."""
    FIELD = "field"
    """A field technician: their own visits (prepare, arrive, sign-off)."""
    SUPERVISOR = "supervisor"
    """Assign cases, see every case of the team, reports."""
    AUDITOR = "auditor"
    """Read the audit and recordings; change nothing."""


#: The certificate extension that carries the roles (OpenSSH ``extension:NAME=VALUE``).
ROLES_EXTENSION = "roles@helloword.cn"

#: Roles of a certificate made before roles existed (no :data:`ROLES_EXTENSION`): what such
#: a technician did every day, and nothing of the desk, the supervisor or the auditor.
LEGACY_ROLES: frozenset[Role] = frozenset({Role.REMOTE})


class RolesError(ValueError):
    """The roles extension is not a comma-separated list of known roles."""


def parse_roles(value: bytes | None) -> frozenset[Role]:
    """The roles an extension value names; :data:`LEGACY_ROLES` when it is absent.

    Raises:
        RolesError: empty, not UTF-8, or names a role this build does not know (refuse:
            a role we do not know may mean a right we would wrongly grant or deny).
    """
    if value is None:
        return LEGACY_ROLES
    try:
        names = value.decode("utf-8").split(",")
    except UnicodeDecodeError:
        raise RolesError("the roles extension of the certificate is not UTF-8 text") from None
    roles: set[Role] = set()
    known = {r.value for r in Role}
    for name in names:
        name = name.strip()
        if name not in known:
            raise RolesError(
                f"the certificate names an unknown role {name[:40]!r}; known roles: "
                + ", ".join(r.value for r in Role))
        roles.add(Role(name))
    return frozenset(roles)


def format_roles(roles: frozenset[Role] | set[Role]) -> str:
    """The extension value for ``roles`` (sorted, so equal sets give equal certificates)."""
    if not roles:
        raise RolesError("a technician needs at least one role")
    return ",".join(sorted(r.value for r in roles))


# -- who may do what (docs/security.md#roles) --------------------------------------------

#: Technician requests (the ``type`` of a message on ``/tech``) -> the roles that may send
#: them; holding any one of them is enough. Finer rules (a ``remote`` technician's own cases,
#: a ``field`` technician's own visits, a recording's own session) are the server's
#: (:mod:`server.access`), applied after this table.
REQUESTS: dict[str, frozenset[Role]] = {
    "list_agents": frozenset({Role.REMOTE, Role.DESK, Role.SUPERVISOR, Role.AUDITOR}),
    "list_cases": frozenset({Role.REMOTE, Role.DESK, Role.SUPERVISOR, Role.AUDITOR}),
    "get_case": frozenset({Role.REMOTE, Role.DESK, Role.SUPERVISOR, Role.AUDITOR}),
    "claim_case": frozenset({Role.REMOTE, Role.SUPERVISOR}),
    "assign_case": frozenset({Role.REMOTE, Role.SUPERVISOR}),
    "run_diag": frozenset({Role.REMOTE}),
    "run_fix": frozenset({Role.REMOTE}),
    "list_plugins": frozenset({Role.REMOTE}),
    "ask_consent": frozenset({Role.REMOTE, Role.DESK}),
    "open_tunnel": frozenset({Role.REMOTE}),
    "fanout": frozenset({Role.REMOTE, Role.SUPERVISOR}),
    "get_recording": frozenset({Role.REMOTE, Role.SUPERVISOR, Role.AUDITOR}),
    "escalate_case": frozenset({Role.REMOTE, Role.DESK, Role.SUPERVISOR}),
    "list_tickets": frozenset({Role.REMOTE, Role.DESK, Role.FIELD, Role.SUPERVISOR,
                               Role.AUDITOR}),
    "get_ticket": frozenset({Role.REMOTE, Role.DESK, Role.FIELD, Role.SUPERVISOR,
                             Role.AUDITOR}),
    "offer_visit": frozenset({Role.REMOTE, Role.DESK}),
    "book_visit": frozenset({Role.DESK, Role.SUPERVISOR}),
    "update_ticket": frozenset({Role.DESK, Role.FIELD, Role.SUPERVISOR}),
}

#: Actions of a signed command (``proto.messages.Action`` values, and ``ping`` for a
#: fan-out) -> the roles whose certificate may sign them. The agent checks this for every
#: command it runs, whatever the server said: a certificate without ``remote`` never
#: diagnoses, fixes or opens a shell on a customer's machine.
ACTIONS: dict[str, frozenset[Role]] = {
    "diag": frozenset({Role.REMOTE}),
    "fix": frozenset({Role.REMOTE}),
    "plugins": frozenset({Role.REMOTE}),
    "tunnel": frozenset({Role.REMOTE}),
    "consent": frozenset({Role.REMOTE, Role.DESK}),
    "book-visit": frozenset({Role.REMOTE, Role.DESK}),
    "ping": frozenset({Role.REMOTE, Role.SUPERVISOR}),
}

#: Scopes a technician holding only ``desk`` may ask a customer for (the desk offers
#: on-site visits; it never reads or changes the machine).
DESK_SCOPES: frozenset[str] = frozenset({"book-visit"})

#: What each role is for, in refusals ("the remote role (diagnose, fix, shell)").
_PURPOSE: dict[Role, str] = {
    Role.REMOTE: "diagnose, fix, shell",
    Role.DESK: "service desk",
    Role.FIELD: "on-site visits",
    Role.SUPERVISOR: "assign cases, see the team's cases",
    Role.AUDITOR: "read the audit and recordings",
}


def needed(what: str) -> frozenset[Role]:
    """The roles of which any one allows ``what`` (a request type or a command action).

    Raises:
        KeyError: ``what`` is in neither table (a bug: every request and action is listed,
            ``tests/proto/test_roles_matrix.py`` checks it).
    """
    if what in REQUESTS:
        return REQUESTS[what]
    return ACTIONS[what]


def describe(roles: Collection[Role]) -> str:
    """``desk, field`` (sorted), or ``no role``."""
    return ", ".join(sorted(r.value for r in roles)) or "no role"


def allowed(roles: Collection[Role], what: str) -> str | None:
    """``None`` when ``roles`` allow ``what``, else the reason, naming the role needed.

    ``what`` is a technician request's message type (``run_diag``, keys of
    :data:`REQUESTS`) or a signed command's action (``diag``, keys of :data:`ACTIONS`).
    An unknown ``what`` is refused (never allowed by default).
    """
    if what in REQUESTS:
        need = REQUESTS[what]
    elif what in ACTIONS:
        need = ACTIONS[what]
    else:
        return (f"{what[:40]!r} is not an action this build knows a role for; upgrade the "
                "server and the agent")
    if need & frozenset(roles):
        return None
    order = sorted(need, key=list(Role).index)
    wanted = " or ".join(f"the {r.value} role ({_PURPOSE[r]})" for r in order)
    return (f"{what} needs {wanted}; this technician's certificate has {describe(roles)}; "
            "ask an operator for a certificate with that role "
            f"(`hw-server tech add NAME --role {order[0].value}`)")


def consent_scopes_allowed(roles: Collection[Role], scopes: Collection[str]) -> str | None:
    """``None`` when ``roles`` may ask a customer for ``scopes``, else the reason.

    ``remote`` may ask for any scope; ``desk`` only for :data:`DESK_SCOPES`.
    """
    held = frozenset(roles)
    if Role.REMOTE in held:
        return None
    if Role.DESK in held:
        extra = sorted(set(scopes) - DESK_SCOPES)
        if not extra:
            return None
        return (f"the desk role may ask a customer only for the "
                f"{', '.join(sorted(DESK_SCOPES))} scope, not {', '.join(extra)}; a "
                "technician with the remote role asks for those")
    return allowed(held, "consent")
