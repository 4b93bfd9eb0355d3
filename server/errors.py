"""Exceptions of the server package.

::

    ServerError               base; the text says what happened and what to do
    ├── ConfigError           a home that is missing, incomplete or invalid
    ├── CertificateRefused    a technician certificate that does not check out
    ├── EnrollmentRefused     an enrollment request that cannot be honoured
    ├── RelayError            a relayed request did not reach its agent or come back
    │   ├── AgentGone         the agent's connection ended while a request to it was pending
    │   └── BusError          the bus between nodes could not deliver a request
    │       └── NodeUnreachable   no node answers for that node id
    └── FanoutBusy            too many fan-outs are running on this node

The store has its own tree in :mod:`server.store` (``StoreError``; the on-site desk's
``TicketError`` is one).
"""

from __future__ import annotations


class ServerError(Exception):
    """Base class of server errors; never carries keys, tokens or payloads."""


class ConfigError(ServerError):
    """The home directory or its config is missing or invalid."""


class CertificateRefused(ServerError):
    """A technician certificate failed verification."""


class EnrollmentRefused(ServerError):
    """An enrollment cannot be completed."""


class RelayError(ServerError):
    """A request relayed to an agent got no result: the agent or its node is gone."""


class AgentGone(RelayError):
    """The agent's run session closed while a request to it was pending."""


class BusError(RelayError):
    """The bus could not deliver a request; the message says what to do."""


class NodeUnreachable(BusError):
    """No node answers for that node id (it stopped or lost its bus connection)."""


class FanoutBusy(ServerError):
    """Too many fan-outs are running on this node."""
