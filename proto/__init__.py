"""HelloWord wire protocol, sans-I/O.

Typed messages (:mod:`proto.messages`), one codec with a hard frame-size limit
(:mod:`proto.codec`), version negotiation and the session state machines
(:mod:`proto.session`), the enrollment token (:mod:`proto.token`) and typed errors
(:mod:`proto.errors`). Nothing here does I/O, reads the clock or draws random numbers:
callers pass ``now``, nonces and keys in. See ``docs/protocol.md``.
"""

from __future__ import annotations

#: Protocol versions this build speaks, lowest and highest (``docs/protocol.md#versions``).
MIN_VERSION = 1
MAX_VERSION = 3

#: Hard limit on one encoded frame, in bytes (``docs/protocol.md#framing``).
MAX_FRAME_SIZE = 1024 * 1024

__all__ = ["MAX_FRAME_SIZE", "MAX_VERSION", "MIN_VERSION"]
