"""The consent gate: which grant lets a verified command act (``docs/protocol.md#grants``).

Everything that decides whether an action may run under the customer's consent lives in this
file (h11's "Rule 1"): the table of the scope each action needs (:data:`ACTION_SCOPE`), the
scopes that open a tunnel (:data:`TUNNEL_SCOPES`), and one pure function, :func:`decide`,
that the agent calls for every command and that its SSH tunnels call again while a session
is open. The refusal text it returns is the protocol's ``no_consent: …``
(``docs/protocol.md#refusal-texts``).

Before the consent gate, :func:`role_refusal` checks that the certificate that signed the
command holds a role allowed to ask for the action (``docs/security.md#roles``): the
customer's grant never extends what the organisation certified the technician for.

Sans-I/O like the rest of :mod:`proto`: the caller passes the grants (any objects with the
fields of :class:`GrantLike`: the agent's stored ``agent.consent.Grant``, or the wire
``ConsentGrant`` of a receipt) and ``now``. It runs after :func:`proto.command.verify_command`
has checked the signature, certificate, revocation and nonce: ``tech`` and ``fingerprint``
are the verified command's, never the server's word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from .errors import LocalProtocolError, RefusalReason
from .messages import Action, Scope
from .roles import Role, allowed, consent_scopes_allowed

__all__ = [
    "ACTION_SCOPE", "NO_CONSENT", "TUNNEL_SCOPES", "Allowed", "GatedAction", "GrantLike",
    "Refusal", "decide", "grant_covers", "is_active", "needed_scopes", "role_refusal",
]

#: The scope an action needs in an active grant; ``None``: no grant needed (it asks for one).
ACTION_SCOPE: dict[Action, Scope | None] = {
    Action.DIAG: Scope.DIAGNOSTICS, Action.CONSENT: None, Action.FIX: Scope.FIX,
    Action.PLUGINS: Scope.DIAGNOSTICS, Action.BOOK_VISIT: Scope.BOOK_VISIT,
    Action.TUNNEL: Scope.SHELL}
"""``tunnel`` is the exception: it needs ``shell`` *or* ``files`` (:data:`TUNNEL_SCOPES`);
the agent then checks each SSH channel (shell/exec need ``shell``, SFTP needs ``files``)."""

#: Scopes that let a technician open an SSH tunnel (``docs/protocol.md#tunnels``).
TUNNEL_SCOPES: frozenset[Scope] = frozenset({Scope.SHELL, Scope.FILES})

#: The machine-readable word a refusal by the gate starts with.
NO_CONSENT = "no_consent"

#: The actions the gate decides (``consent`` asks for a grant and needs none).
GatedAction = Literal[Action.DIAG, Action.FIX, Action.PLUGINS, Action.BOOK_VISIT,
                      Action.TUNNEL]


class GrantLike(Protocol):
    """The fields of a grant the gate reads (``agent.consent.Grant``, ``ConsentGrant``)."""

    @property
    def receipt_id(self) -> str: ...
    @property
    def case(self) -> str: ...
    @property
    def tech(self) -> str: ...
    @property
    def tech_fingerprint(self) -> str: ...
    @property
    def scopes(self) -> Sequence[Scope]: ...
    @property
    def fix_needs_approval(self) -> bool: ...
    @property
    def granted_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def revoked_at(self) -> datetime | None: ...


G = TypeVar("G", bound=GrantLike)


@dataclass(frozen=True)
class Allowed(Generic[G]):
    """The action may run under ``grant``.

    ``scopes`` are the scopes the action may use: the one it needs, or for ``tunnel`` those
    of :data:`TUNNEL_SCOPES` that some active grant gives (its SSH channels are limited to
    them, possibly from several grants). When several grants match, ``grant`` is one that
    asks for per-fix approval if any does (approval wins), then the oldest.
    """

    grant: G
    scopes: frozenset[Scope]


@dataclass(frozen=True)
class Refusal:
    """No active grant covers the action (:attr:`text` is the wire's ``no_consent: …``),
    or the signer's roles do not allow it (``wrong_role: …``, :func:`role_refusal`)."""

    reason: str
    message: str

    @property
    def text(self) -> str:
        return f"{self.reason}: {self.message}"

    def __str__(self) -> str:
        return self.text


def needed_scopes(action: GatedAction) -> frozenset[Scope]:
    """The scopes of which the action needs any one in an active grant.

    Raises:
        LocalProtocolError: ``action`` is not gated (``consent`` asks for a grant).
    """
    if action is Action.TUNNEL:
        return TUNNEL_SCOPES
    scope = ACTION_SCOPE.get(action)
    if scope is None:
        raise LocalProtocolError(f"the consent gate does not decide action {action!s}: it "
                                 "needs no grant")
    return frozenset({scope})


def is_active(grant: GrantLike, now: datetime) -> bool:
    """Not revoked and not expired at ``now``."""
    return grant.revoked_at is None and now < grant.expires_at


def grant_covers(grant: GrantLike, *, case: str, tech: str, fingerprint: str, scope: Scope,
                 now: datetime) -> bool:
    """Whether ``grant`` lets ``tech`` (signing with the key ``fingerprint``) use ``scope``
    on ``case`` at ``now`` (``docs/protocol.md#grants``): same case and technician, the scope
    among its scopes, not revoked, not expired, and bound to no key or to this one."""
    return (grant.case == case and grant.tech == tech and scope in grant.scopes
            and is_active(grant, now)
            and (not grant.tech_fingerprint or grant.tech_fingerprint == fingerprint))


def decide(action: GatedAction, *, case: str, tech: str, fingerprint: str,
           grants: Iterable[G], now: datetime) -> Allowed[G] | Refusal:
    """The grant that lets ``tech`` do ``action`` on ``case`` now, or why not.

    Args:
        action: what the verified command asks for (not ``consent``).
        case: the case the command is for.
        tech: the technician named in the verified command.
        fingerprint: the SHA-256 fingerprint of the key that signed it.
        grants: every grant the customer made (any case, active or not); order is irrelevant.
        now: the current time (aware).

    Returns:
        :class:`Allowed` with the grant, or a :class:`Refusal` whose text says what to ask.

    Raises:
        LocalProtocolError: ``action`` is not gated (``consent``).
    """
    needed = needed_scopes(action)
    matching: list[G] = []
    scopes: set[Scope] = set()
    for grant in grants:
        covered = {s for s in needed if grant_covers(grant, case=case, tech=tech,
                                                     fingerprint=fingerprint, scope=s, now=now)}
        if covered:
            matching.append(grant)
            scopes |= covered
    if not matching:
        return _refusal(action, case=case, tech=tech)
    # Approval wins (a grant that asks for per-fix approval), then the oldest: the choice
    # never depends on the order the grants came in.
    best = min(matching, key=lambda g: (not g.fix_needs_approval, g.granted_at, g.receipt_id))
    return Allowed(grant=best, scopes=frozenset(scopes))


def _refusal(action: GatedAction, *, case: str, tech: str) -> Refusal:
    if action is Action.TUNNEL:
        return Refusal(NO_CONSENT, (
            f"the customer has not granted {tech} the shell or files scope on case {case} "
            f"(or the grant expired or was revoked); ask with "
            f"`hw-tech consent-request {case} --scopes shell` (or files)"))
    scope = ACTION_SCOPE[action]
    assert scope is not None
    return Refusal(NO_CONSENT, (
        f"the customer has not granted {tech} the {scope.value} scope on case {case} (or the "
        f"grant expired or was revoked); ask with "
        f"`hw-tech consent-request {case} --scopes {scope.value}`"))


def role_refusal(roles: Iterable[Role], action: str, args: Mapping[str, Any] | None = None
                 ) -> Refusal | None:
    """``None`` when a certificate with ``roles`` may sign ``action``, else the refusal
    (``wrong_role: …``).

    The agent calls it for every verified command (and fan-out ping), with the roles of the
    certificate that signed it (:attr:`proto.certs.CertInfo.roles`), before the consent
    gate: it holds even when the server forwards a command it should have refused.
    ``action`` is a :class:`~proto.messages.Action` value or ``ping``; for ``consent``,
    ``args`` are the signed command's (its ``scopes`` are checked: the desk role asks only
    for ``book-visit``).
    """
    held = frozenset(roles)
    why = allowed(held, action)
    if why is None and action == Action.CONSENT.value:
        scopes = (args or {}).get("scopes")
        names = [str(s) for s in scopes] if isinstance(scopes, list) else []
        why = consent_scopes_allowed(held, names)
    return None if why is None else Refusal(RefusalReason.WRONG_ROLE.value, why)
