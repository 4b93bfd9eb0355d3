"""The customer's consent: the grants the agent keeps (``docs/security.md#consent``).

A grant names a case, a technician (name, and the key fingerprint from their certificate
when known), scopes and an expiry. It lives in ``agent.db`` next to the local log; only the
customer creates or revokes one (terminal prompt, control socket, or the local policy
file). Nothing the server sends can widen a grant or the policy. Which grant lets a command
act is decided by the consent gate, :func:`proto.gate.decide`; this module only stores.
"""

from __future__ import annotations

import math
import secrets
import sqlite3
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from proto.gate import is_active
from proto.messages import ConsentGrant, Scope
from proto.revocation import DEFAULT_GRACE

from .errors import ConsentError

DEFAULT_MINUTES = 30
MAX_MINUTES = 8 * 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    receipt_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, case_number TEXT NOT NULL,
    tech TEXT NOT NULL, tech_fingerprint TEXT NOT NULL, scopes TEXT NOT NULL,
    fix_needs_approval INTEGER NOT NULL, granted_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    via TEXT NOT NULL, revoked_at TEXT);
CREATE TABLE IF NOT EXISTS seen_nonces (nonce BLOB PRIMARY KEY, expires_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS seen_nonces_expiry ON seen_nonces (expires_at);
"""


def parse_scopes(text: str | list[str]) -> list[Scope]:
    items = text.split(",") if isinstance(text, str) else text
    scopes: list[Scope] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            scopes.append(Scope(item))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ConsentError(f"unknown scope {item!r}; scopes are: {known}") from None
    if not scopes:
        raise ConsentError("name at least one scope (e.g. diagnostics)")
    return list(dict.fromkeys(scopes))


#: The longest duration a grant can be asked for (the policy caps it further, 8 h by default).
LONGEST = timedelta(days=7)


def parse_duration(text: str) -> timedelta:
    """``20m``, ``1h``, ``90s`` or plain minutes: more than 0 and at most 7 days.

    Raises:
        ConsentError: not a duration, zero or negative, not finite, or over 7 days.
    """
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 60)
    try:
        value = float(number)
    except ValueError:
        raise ConsentError(f"duration {text[:40]!r} is not like 20m, 1h or 90s; give "
                           "minutes (m), hours (h) or seconds (s)") from None
    seconds = value * unit  # inf when huge: refused below as over 7 days
    if math.isnan(value):
        raise ConsentError(f"duration {text[:40]!r} is not a number of minutes, hours or "
                           "seconds; give one like 20m, 1h or 90s")
    if seconds <= 0:
        raise ConsentError("a grant must last more than zero seconds; give a duration like "
                           "20m or 1h")
    if seconds > LONGEST.total_seconds():
        raise ConsentError(f"duration {text[:40]!r} is longer than the 7 days a grant can "
                           "last; give one like 1h (this computer's policy may cap it "
                           "further)")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Policy:
    """Local policy for managed devices (``--policy FILE``); the server can never change it.

    ``max_minutes`` caps every grant; ``preapproved`` scopes are granted without asking, to
    the technicians in ``preapproved_techs`` (all org-certified technicians when empty).
    """

    max_minutes: int = MAX_MINUTES
    preapproved: frozenset[Scope] = frozenset()
    preapproved_techs: frozenset[str] = frozenset()
    prompt_timeout_s: float = 120.0
    fix_approval: bool = True
    revocation_grace: timedelta = DEFAULT_GRACE
    """How long after the signed revocation list's ``next_update`` commands are still
    taken (``revocation_grace_hours``; default 24 h, 0 to 720)."""

    @classmethod
    def load(cls, path: Path | None) -> Policy:
        if path is None:
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConsentError(f"policy file {path}: {exc}") from None
        known = {"max_minutes", "preapproved_scopes", "preapproved_techs", "prompt_timeout_s",
                 "fix_approval", "revocation_grace_hours"}
        if unknown := sorted(set(data) - known):
            raise ConsentError(f"policy file {path}: unknown key(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        try:
            max_minutes = int(data.get("max_minutes", MAX_MINUTES))
            timeout = float(data.get("prompt_timeout_s", 120.0))
            techs = frozenset(str(t) for t in data.get("preapproved_techs", []))
        except (TypeError, ValueError):
            raise ConsentError(f"policy file {path}: bad value types") from None
        if not 0 < max_minutes <= 7 * 24 * 60 or not 0 < timeout <= 3600:
            raise ConsentError(f"policy file {path}: max_minutes or prompt_timeout_s out of "
                               "range")
        raw = data.get("preapproved_scopes", [])
        if not isinstance(raw, list):
            raise ConsentError(f"policy file {path}: preapproved_scopes must be a list")
        pre = frozenset(parse_scopes([str(x) for x in raw])) if raw else frozenset()
        fix_approval = data.get("fix_approval", True)
        if not isinstance(fix_approval, bool):
            raise ConsentError(f"policy file {path}: fix_approval must be true or false")
        grace = data.get("revocation_grace_hours", DEFAULT_GRACE / timedelta(hours=1))
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 720:
            raise ConsentError(f"policy file {path}: revocation_grace_hours must be a number "
                               "of hours from 0 to 720")
        return cls(max_minutes=max_minutes, preapproved=pre, preapproved_techs=techs,
                   prompt_timeout_s=timeout, fix_approval=fix_approval,
                   revocation_grace=timedelta(hours=grace))

    def cap(self, duration: timedelta) -> timedelta:
        return min(duration, timedelta(minutes=self.max_minutes))

    def preapproves(self, tech: str, scopes: list[Scope]) -> bool:
        return bool(scopes) and set(scopes) <= self.preapproved and (
            not self.preapproved_techs or tech in self.preapproved_techs)


@dataclass(frozen=True)
class Grant:
    receipt_id: str
    case: str
    tech: str
    tech_fingerprint: str
    scopes: list[Scope]
    fix_needs_approval: bool
    granted_at: datetime
    expires_at: datetime
    via: str
    revoked_at: datetime | None = None
    agent_id: str = field(default="", compare=False)

    def active(self, now: datetime) -> bool:
        """Not revoked, not expired (what a grant allows: :func:`proto.gate.decide`)."""
        return is_active(self, now)

    def as_wire(self) -> ConsentGrant:
        return ConsentGrant(
            receipt_id=self.receipt_id, agent_id=self.agent_id, case=self.case, tech=self.tech,
            scopes=self.scopes, granted_at=self.granted_at, expires_at=self.expires_at,
            via=self.via, tech_fingerprint=self.tech_fingerprint,
            fix_needs_approval=self.fix_needs_approval, revoked_at=self.revoked_at)


def _ts(text: str | None) -> datetime | None:
    if text is None:
        return None
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class ConsentStore:
    """Grants in ``agent.db`` (own tables; own connection, or the local store's).

    The gate reads the grants for every command, so they are held in memory: the cache is
    dropped on every write through this store, and re-read when ``PRAGMA data_version``
    says another connection (another process, e.g. a tool writing ``agent.db`` directly)
    committed to the database since. Writes through ``connection`` itself do not change
    ``data_version``: pass the local store's connection (:attr:`LocalStore.connection`) and
    the local log's writes do not drop the cache either.
    """

    def __init__(self, path: Path, *, agent_id: str,
                 connection: sqlite3.Connection | None = None) -> None:
        """``connection``: share this one (autocommit, WAL, already open on ``path``);
        ``None``: open one of its own, closed by :meth:`close`."""
        self.agent_id = agent_id
        self._own = connection is None
        if connection is None:
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute("PRAGMA journal_mode=WAL")
            # As for the local log: a commit survives the agent being killed.
            connection.execute("PRAGMA synchronous=NORMAL")
        self._db = connection
        self._db.executescript(_SCHEMA)
        self._nonce_writes = 0
        self._grants: list[Grant] | None = None  # cached rows of ``grants``
        self._grants_version = -1  # PRAGMA data_version when they were read

    def close(self) -> None:
        if self._own:
            self._db.close()

    def _row(self, r: tuple[str, ...]) -> Grant:
        granted, expires = _ts(r[7]), _ts(r[8])
        assert granted is not None and expires is not None
        return Grant(receipt_id=r[0], case=r[2], tech=r[3], tech_fingerprint=r[4],
                     scopes=[Scope(s) for s in r[5].split(",") if s],
                     fix_needs_approval=bool(r[6]), granted_at=granted, expires_at=expires,
                     via=r[9], revoked_at=_ts(r[10]), agent_id=r[1])

    def grant(self, *, case: str, tech: str, scopes: list[Scope], duration: timedelta,
              now: datetime, via: str, policy: Policy, tech_fingerprint: str = "",
              fix_needs_approval: bool = True) -> Grant:
        """Record a grant, its duration capped by the policy."""
        g = Grant(receipt_id="cg-" + secrets.token_hex(8), case=case, tech=tech,
                  tech_fingerprint=tech_fingerprint, scopes=list(scopes),
                  fix_needs_approval=fix_needs_approval, granted_at=now,
                  expires_at=now + policy.cap(duration), via=via, agent_id=self.agent_id)
        self._grants = None
        self._db.execute(
            "INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (g.receipt_id, self.agent_id, case, tech, tech_fingerprint,
             ",".join(s.value for s in scopes), int(fix_needs_approval),
             g.granted_at.isoformat(), g.expires_at.isoformat(), via))
        return g

    def all(self) -> list[Grant]:
        """Every grant, oldest first (from memory unless another connection wrote since)."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if self._grants is None or version != self._grants_version:
            rows = self._db.execute("SELECT * FROM grants ORDER BY granted_at").fetchall()
            self._grants, self._grants_version = [self._row(r) for r in rows], version
        return list(self._grants)

    def remember_nonce(self, nonce: bytes, expires_at: datetime, now: datetime) -> None:
        """Persist a used command nonce until its command expires (replay across restarts)."""
        self._nonce_writes += 1
        if self._nonce_writes % 256 == 0:
            self._db.execute("DELETE FROM seen_nonces WHERE expires_at <= ?",
                             (now.astimezone(UTC).isoformat(),))
        self._db.execute("INSERT OR IGNORE INTO seen_nonces VALUES (?, ?)",
                         (nonce, expires_at.astimezone(UTC).isoformat()))

    def seen_nonces(self, now: datetime) -> list[tuple[bytes, datetime]]:
        rows = self._db.execute("SELECT nonce, expires_at FROM seen_nonces WHERE expires_at > ?",
                                (now.astimezone(UTC).isoformat(),))
        out = []
        for nonce, expires in rows:
            when = _ts(expires)
            assert when is not None
            out.append((bytes(nonce), when))
        return out

    def revoke(self, *, case: str | None, now: datetime) -> list[Grant]:
        """Revoke the active grants (of one case, or all); returns them as revoked."""
        revoked = [g for g in self.all() if g.active(now) and (case is None or g.case == case)]
        self._grants = None
        for g in revoked:
            self._db.execute("UPDATE grants SET revoked_at = ? WHERE receipt_id = ?",
                             (now.isoformat(), g.receipt_id))
        return [Grant(**{**g.__dict__, "revoked_at": now}) for g in revoked]
