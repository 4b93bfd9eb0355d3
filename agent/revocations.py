"""The agent's organisation-signed revocation list (``docs/security.md#revocation-lists``).

Kept in the agent home as ``revocations.signed`` (the frame as received), so a restart never
goes back to an older list. A list is taken only if the organisation key pinned at
enrollment signed it and its sequence number is higher than the one held; commands are
refused once the held list is older than its ``next_update`` plus the local policy's grace
(:attr:`agent.consent.Policy.revocation_grace`). The decisions are
:mod:`proto.revocation`'s; this module only keeps the file.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from proto import codec
from proto import messages as m
from proto.errors import DecodeError
from proto.revocation import (
    Offer,
    RevocationError,
    RevocationList,
    Stale,
    consider,
    freshness,
    verify_list,
)

log = logging.getLogger("hw.agent")

FILE = "revocations.signed"


class SignedRevocationStore:
    """The newest signed list this agent has accepted."""

    def __init__(self, home: Path, org_pub: bytes) -> None:
        self.path = home / FILE
        self.org_pub = org_pub
        self.held: RevocationList | None = None
        try:
            signed = codec.decode(self.path.read_bytes())
            if isinstance(signed, m.SignedRevocations):
                self.held = verify_list(signed, org_pub=org_pub)
        except FileNotFoundError:
            pass
        except (OSError, DecodeError, RevocationError) as exc:
            log.warning("ignoring %s (%s); waiting for the server to send the list again",
                        self.path, type(exc).__name__)

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(self.held.fingerprints) if self.held else frozenset()

    def offer(self, signed: m.SignedRevocations) -> Offer | RevocationError:
        """Take ``signed`` if the organisation signed it and it is newer than the held one."""
        try:
            body = verify_list(signed, org_pub=self.org_pub)
        except RevocationError as exc:
            log.warning("refused a revocation list from the server: %s", exc)
            return exc
        outcome = consider(self.held, body)
        if outcome is Offer.NEWER:
            self.held = body
            try:
                tmp = self.path.with_name(FILE + ".tmp")
                tmp.write_bytes(codec.encode(signed))
                os.replace(tmp, self.path)
            except OSError as exc:  # a full disk: in force until a restart all the same
                log.warning("cannot keep revocation list number %d in %s (%s); free some "
                            "space: after a restart this computer waits for the list again",
                            body.sequence, self.path, exc.strerror)
        elif outcome is not Offer.SAME:
            assert self.held is not None
            log.warning("ignored revocation list number %d from the server: this computer "
                        "holds number %d already (%s)", body.sequence, self.held.sequence,
                        outcome.value)
        return outcome

    def stale(self, now: datetime, grace: timedelta) -> Stale | None:
        return freshness(self.held, now=now, grace=grace)
