"""Errors of ``hw-org``: one class; the text says what happened and what to do."""

from __future__ import annotations


class OrgError(Exception):
    """A refusal of ``hw-org``; never carries key material."""
