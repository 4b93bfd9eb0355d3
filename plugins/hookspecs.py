"""Hook specifications of HelloWord diagnostic plugins (pluggy project ``helloword``).

Every hook is called with keyword arguments only. A plugin implements any subset, with
``@hookimpl`` from :mod:`plugins`, taking any subset of a hook's arguments. The agent's
runners (``agent/runner.py``, ``agent/fixrunner.py`` for fixers) call each implementation
separately, so one failing plugin is reported (finding ``plugin.failed``) while the others
go on; hook wrappers are therefore not supported for these hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins import hookspec
from plugins.api import Fixer, Probe
from proto.messages import Finding


@hookspec
def hw_probes() -> list[Probe]:
    """Return the probes this plugin contributes (may be empty).

    Not firstresult: the lists of every plugin are collected. Probe names must be unique
    across all plugins; a duplicate is reported as a failure of the later plugin. Must be
    cheap and side-effect free: it runs on every request and for ``hw-tech plugins``.
    """
    raise NotImplementedError


@hookspec
def hw_evaluate(probe: str, readings: Mapping[str, Any]) -> list[Finding]:
    """Draw findings from the readings of probe ``probe`` (status ``ok`` only).

    Not firstresult: every plugin is asked about every probe and all findings are
    collected, so a plugin may conclude from another plugin's readings; return ``[]``
    for probes you do not know. ``readings`` are the sanitised, JSON-safe values that go
    on the wire (read-only). Must be pure and quick: readings in, findings out, no I/O.
    """
    raise NotImplementedError


@hookspec
def hw_fixers() -> list[Fixer]:
    """Return the fixers this plugin contributes (may be empty).

    Not firstresult: the lists of every plugin are collected. Fixer names must be unique
    across all plugins; a duplicate is ignored (the first plugin registered keeps the
    name). Must be cheap and side-effect free: it runs for every fix request and for
    ``hw-tech plugins``; the work happens in each fixer's ``plan`` and ``apply``.
    """
    raise NotImplementedError
