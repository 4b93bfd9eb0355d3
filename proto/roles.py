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
