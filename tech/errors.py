"""Exceptions of the technician package.

::

    TechError       a technician command failed; the text says what happened and what to do
"""

from __future__ import annotations


class TechError(Exception):
    """A technician command failed; never carries keys, tokens or payloads."""
