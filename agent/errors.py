"""Exceptions of the agent package.

::

    AgentError            base; the text says what happened and what to do
    ├── NotEnrolled       the home holds no enrollment yet
    ├── EnrollError       enrollment refused or impossible (CA mismatch, used token...)
    ├── Unreachable       no server URL answered (transient: the run loop retries)
    ├── Refused           the server refused us for good (revoked, unknown agent)
    ├── ControlError      the control socket cannot be reached or refused the request
    ├── ConsentError      a consent request or grant the customer cannot make as asked
    ├── FixError          a fix cannot be planned or run as asked (text for the technician)
    └── VisitError        an on-site visit answer that cannot be given
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class; never carries keys, tokens or payloads."""


class NotEnrolled(AgentError):
    pass


class EnrollError(AgentError):
    pass


class Unreachable(AgentError):
    """``retry_after``: seconds a busy server asked us to wait (HTTP 503), else None."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(AgentError):
    pass


class ControlError(AgentError):
    """The control socket cannot be reached or refused the request."""


class ConsentError(AgentError):
    """A grant that cannot be made (unknown scope, over the policy's cap...)."""


class FixError(AgentError):
    """A fix cannot be planned or run as asked. The message says why (for the technician)."""


class VisitError(AgentError):
    """A visit command cannot be done; the message says why and what to do."""
