"""The organisation-signed revocation list in a server home (``docs/security.md#revocation-lists``).

The server only stores and distributes the list (``revocations.signed`` in the home, the
:class:`proto.messages.SignedRevocations` frame as sent). Two layouts:

- **simple** (``org.key`` in the home, what ``hw-server init`` makes without
  ``--org-pub``): the server signs the list itself, again whenever the revoked keys change
  (``hw-server tech revoke``) and before ``next_update`` (:data:`SIMPLE_VALIDITY`, re-signed
  when half of it is left).
- **offline** (``org.pub`` only): the list is signed elsewhere (``hw-org revocations``) and
  loaded with ``hw-server revocations load``, which checks the signature and refuses a list
  older than the one held. The server logs a warning as ``next_update`` approaches.

Sequence numbers made here are ``max(held + 1, now in Unix seconds)``, so several nodes of
the simple layout, each signing its own, still never go back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import codec
from proto import messages as m
from proto.errors import DecodeError
from proto.revocation import (
    Offer,
    RevocationError,
    RevocationList,
    consider,
    make_list,
    sign_list,
    verify_list,
)

from .errors import ServerError
from .files import replace_file

log = logging.getLogger("hw.server")

#: The signed list in the server home (one ``signed_revocations`` frame).
SIGNED_FILE = "revocations.signed"

#: How long a list the server signs itself (simple layout) stays current.
SIMPLE_VALIDITY = timedelta(days=1)

#: The offline layout: the log warns once ``next_update`` is this close (or past).
WARN_BEFORE = timedelta(days=2)

#: At most one such warning per this interval.
WARN_EVERY = timedelta(hours=1)


def has_org_key(home: Path) -> bool:
    """The simple layout: the organisation private key is in the server home."""
    return (home / "org.key").is_file()


def _org_key(home: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_ssh_private_key((home / "org.key").read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ServerError(f"cannot read the organisation key {home / 'org.key'} "
                          f"({type(exc).__name__}); restore it from your backup") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ServerError(f"{home / 'org.key'} is not an Ed25519 key; restore it from your "
                          "backup")
    return key


def read_signed(home: Path, org_pub: bytes) -> tuple[m.SignedRevocations, RevocationList] | None:
    """The list held in ``home`` (``None``: none yet), checked against ``org_pub``.

    Raises:
        ServerError: the file is damaged or not signed by the organisation key.
    """
    path = home / SIGNED_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        signed = codec.decode(data)
    except DecodeError:
        signed = None
    if not isinstance(signed, m.SignedRevocations):
        raise ServerError(f"{path} is damaged; load a signed list again "
                          "(`hw-server revocations load FILE`)")
    try:
        return signed, verify_list(signed, org_pub=org_pub)
    except RevocationError as exc:
        raise ServerError(f"{path}: {exc}") from None


def _write(home: Path, signed: m.SignedRevocations) -> None:
    """Replace ``home/revocations.signed`` in one step through a temporary file of this
    writer's own (``hw-server tech revoke`` and a running server may sign at the same
    moment: each replaces the file whole, the later one wins).

    Raises:
        OSError: the list cannot be written (the one held is unchanged).
    """
    replace_file(home / SIGNED_FILE, codec.encode(signed))


def sign_in_home(home: Path, org_pub: bytes, *, revoked: list[str], now: datetime
                 ) -> RevocationList:
    """Simple layout: sign a new list of ``revoked`` with the home's ``org.key`` and keep it.

    Raises:
        ServerError: no ``org.key`` here (the offline layout), or it cannot be read.
    """
    if not has_org_key(home):
        raise ServerError("this server home has no org.key (the organisation key is kept "
                          "offline): sign the list with `hw-org revocations` and load it with "
                          "`hw-server revocations load FILE`")
    held = read_signed(home, org_pub)
    sequence = max(int(now.timestamp()), held[1].sequence + 1 if held else 1)
    body = make_list(sequence=sequence, issued=now, next_update=now + SIMPLE_VALIDITY,
                     fingerprints=set(revoked))
    _write(home, sign_list(body, _org_key(home)))
    return body


@dataclass(frozen=True)
class Loaded:
    body: RevocationList
    missing: list[str]
    """Keys revoked on this server that the loaded list does not name."""


def load_into_home(home: Path, org_pub: bytes, data: bytes, *, revoked: list[str]) -> Loaded:
    """Offline layout: check a list signed elsewhere and keep it if it is newer.

    Raises:
        ServerError: not a signed list, not signed by this organisation's key, or not newer
            than the one held (the text says which and what to do). Nothing is changed.
    """
    try:
        signed = codec.decode(data.strip())
    except DecodeError:
        signed = None
    if not isinstance(signed, m.SignedRevocations):
        raise ServerError("the file is not a signed revocation list; give the file written "
                          "by `hw-org revocations --out FILE`")
    try:
        body = verify_list(signed, org_pub=org_pub)
    except RevocationError as exc:
        raise ServerError(str(exc)) from None
    held = read_signed(home, org_pub)
    offer = consider(held[1] if held else None, body)
    if offer is Offer.OLDER:
        assert held is not None
        raise ServerError(f"the list's sequence number {body.sequence} is lower than the one "
                          f"this server holds ({held[1].sequence}); agents would ignore it. "
                          "Sign a new list with `hw-org revocations` and load that")
    if offer is Offer.CONFLICT:
        raise ServerError(f"this server already holds a different list with sequence number "
                          f"{body.sequence}; sign a new list with `hw-org revocations`")
    if offer is Offer.NEWER:
        _write(home, signed)
    return Loaded(body, sorted(set(revoked) - set(body.fingerprints)))


class RevocationKeeper:
    """The running server's signed list: re-read when the file changes, re-signed in the
    simple layout when due or when the revoked keys changed, a warning as it ages."""

    def __init__(self, home: Path, org_pub: bytes) -> None:
        self.home = home
        self.org_pub = org_pub
        self.signed: m.SignedRevocations | None = None
        self.body: RevocationList | None = None
        self._stamp: tuple[int, int] | None = None
        self._warned: datetime | None = None

    @property
    def simple(self) -> bool:
        return has_org_key(self.home)

    def _reload(self) -> None:
        try:
            st = (self.home / SIGNED_FILE).stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            held = read_signed(self.home, self.org_pub)
        except ServerError as exc:
            log.warning("%s", exc)
            self._stamp = stamp
            return
        self._stamp = stamp
        if held is not None and consider(self.body, held[1]) is Offer.NEWER:
            self.signed, self.body = held

    def current(self, revoked: list[str], now: datetime) -> m.SignedRevocations | None:
        """The list to send agents now (``None``: the offline layout has none yet)."""
        self._reload()
        if self.simple:
            body = self.body
            if (body is None or set(body.fingerprints) != set(revoked)
                    or now >= body.next_update - (body.next_update - body.issued) / 2):
                try:
                    sign_in_home(self.home, self.org_pub, revoked=revoked, now=now)
                except (ServerError, RevocationError, OSError) as exc:
                    log.warning("cannot sign the revocation list: %s", exc)
                self._reload()
        return self.signed

    def warning(self, now: datetime) -> str | None:
        """A log line when the list (offline layout) is missing or near ``next_update``;
        at most one per :data:`WARN_EVERY`."""
        if self.simple or (self._warned is not None and now - self._warned < WARN_EVERY):
            return None
        body = self.body
        if body is None:
            text = ("no signed revocation list loaded: agents refuse every command until one "
                    "is; sign one with `hw-org revocations` and load it with `hw-server "
                    "revocations load FILE`")
        elif now >= body.next_update - WARN_BEFORE:
            verb = "was" if now >= body.next_update else "is"
            text = (f"the signed revocation list (number {body.sequence}) {verb} due to be "
                    f"replaced at {body.next_update.isoformat()}; agents refuse commands once "
                    "their grace after it ends: sign a new one with `hw-org revocations` and "
                    "load it with `hw-server revocations load FILE`")
        else:
            return None
        self._warned = now
        return text
