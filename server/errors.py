"""Exceptions of the server package.

::

    ServerError               base; the text says what happened and what to do
    ├── ConfigError           a home that is missing, incomplete or invalid
    ├── CertificateRefused    a technician certificate that does not check out
    └── EnrollmentRefused     an enrollment request that cannot be honoured

The store has its own tree in :mod:`server.store` (``StoreError``).
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
