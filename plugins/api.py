"""What a plugin builds on: probe and fixer descriptors, their contexts, the exceptions.

A plugin module implements the hooks of :mod:`plugins.hookspecs`. Its ``hw_probes``
returns :class:`Probe` descriptors; the agent's runner (``agent/runner.py``) calls each
probe's ``run`` on a worker thread with a :class:`ProbeContext` and a timeout, then hands
the readings to every plugin's ``hw_evaluate``, which turns them into findings
(:func:`finding` builds one). See ``docs/findings.md`` for the built-in finding codes.

Its ``hw_fixers`` returns :class:`Fixer` descriptors. A fix goes: ``plan`` (a dry run that
changes nothing: a :class:`FixPlan` saying exactly what would change), the customer's
decision, ``apply`` (a :class:`FixOutcome`), ``verify`` (did the problem go away), and, for
a reversible fixer, ``rollback``. ``agent/fixrunner.py`` runs each step on a worker thread
with the fixer's timeout.

Exceptions raised here::

    PluginError      a plugin cannot be loaded or is malformed (our or the plugin author's
                     mistake); the message says what to fix
    NotAvailable     raised *by a probe*: this platform does not expose the data. Not an
                     error: the report's status becomes ``not_available``. A fixer's
                     ``plan`` raises it when the fix does not exist here (no systemd)
    FixRefused       raised *by a fixer's plan*: this fix must not be attempted with these
                     arguments (PID 1, a path outside the allowlist); the message says why
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proto.messages import Category, Finding, Severity

__all__ = [
    "CODE_PATTERN",
    "PROBE_NAME_PATTERN",
    "FixContext",
    "FixOutcome",
    "FixPlan",
    "FixRefused",
    "Fixer",
    "NotAvailable",
    "PluginError",
    "Probe",
    "ProbeContext",
    "ProbeFunction",
    "finding",
    "number",
]

#: A finding code: dotted lower-case words, ``area.what`` (same rule as ``proto.messages.Code``).
CODE_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
#: A probe name: short, lower-case, stable (it is how a technician asks for the probe).
PROBE_NAME_PATTERN = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")
_MAX_CODE_LENGTH = 64
_MAX_VERSION_LENGTH = 128


class PluginError(Exception):
    """A plugin cannot be loaded or is malformed. The message says what to fix."""


class NotAvailable(Exception):
    """Raised by a probe when this platform does not expose the data it reads.

    The runner reports status ``not_available`` with the message as ``error``. Use it
    instead of guessing a value: "not available here" is a fact a technician can act on.
    """


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may know about the request it runs for.

    Attributes:
        server_time: the server's clock *now* (an aware datetime), e.g. the handshake's
            ``server_time`` plus the monotonic time elapsed since; ``None`` if unknown.
            The ``system`` probe compares it with the local clock.
        agent_version: version string of the running agent ("" if the caller does not say).
        args: request arguments (read-only); probes ignore keys they do not know.
    """

    server_time: datetime | None = None
    agent_version: str = ""
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class FixRefused(Exception):
    """Raised by a fixer's ``plan``: this fix must not be attempted, for the reason given.

    For what the caller asked (PID 1, a path outside the allowlist, a malformed argument),
    not for missing privileges: those go in :attr:`FixPlan.needs_privileges`.
    """


ProbeFunction = Callable[[ProbeContext], dict[str, Any]]
"""A probe's reader: context in, readings (a JSON-like dict) out. Runs on a worker thread."""


@dataclass(frozen=True)
class Probe:
    """A probe descriptor, contributed by a plugin's ``hw_probes`` hook.

    Attributes:
        name: stable, lower-case (``cpu``, ``disk``); unique among all plugins.
        version: version of the readings' shape; bump it when keys change meaning.
        run: reads the machine and returns readings. Blocking is fine (it runs off the
            event loop); it raises :class:`NotAvailable` when the platform has no such data.
        summary: one line for ``hw-tech diag --list``.
        platforms: ``sys.platform`` values it runs on (``"linux"``, ``"darwin"``,
            ``"win32"``); ``None`` means every platform.
        timeout: seconds before the runner gives up on it (status ``timeout``).

    Raises:
        PluginError: a field is malformed (the message names it).
    """

    name: str
    version: str
    run: ProbeFunction
    summary: str
    platforms: frozenset[str] | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not PROBE_NAME_PATTERN.fullmatch(self.name):
            raise PluginError(
                f"probe name {self.name!r} is invalid: use 1-64 characters of "
                "a-z, 0-9, '_', '.', '-' (starting with a letter, digit or '_')"
            )
        if not isinstance(self.version, str) or not 0 < len(self.version) <= _MAX_VERSION_LENGTH:
            raise PluginError(
                f"probe {self.name!r}: version must be a non-empty string of at most "
                f"{_MAX_VERSION_LENGTH} characters"
            )
        if not callable(self.run):
            raise PluginError(f"probe {self.name!r}: run must be callable")
        if not isinstance(self.timeout, int | float) or not 0 < self.timeout <= 600:
            raise PluginError(f"probe {self.name!r}: timeout must be in (0, 600] seconds")
        if self.platforms is not None and not isinstance(self.platforms, frozenset):
            raise PluginError(f"probe {self.name!r}: platforms must be a frozenset or None")

    def runs_on(self, platform: str) -> bool:
        """Whether this probe applies to ``platform`` (a ``sys.platform`` value)."""
        return self.platforms is None or platform in self.platforms


def finding(
    code: str,
    severity: Severity,
    category: Category,
    summary: str,
    summary_zh: str,
    evidence: Mapping[str, Any],
    *,
    remote_fixable: bool = False,
    fixers: Sequence[str] = (),
) -> Finding:
    """Build a :class:`~proto.messages.Finding`, checking the code and fixer names.

    ``evidence`` should be the readings the conclusion rests on (plus the threshold).

    Raises:
        PluginError: ``code`` or a fixer name is not a dotted lower-case code.
    """
    for value in (code, *fixers):
        if len(value) > _MAX_CODE_LENGTH or not CODE_PATTERN.fullmatch(value):
            raise PluginError(
                f"finding code {value!r} is invalid: use dotted lower-case words like "
                "'disk.almost_full' (at most 64 characters)"
            )
    return Finding(
        code=code,
        severity=severity,
        category=category,
        summary=summary,
        summary_zh=summary_zh,
        evidence=dict(evidence),
        remote_fixable=remote_fixable,
        fixers=list(fixers),
    )


def number(readings: Mapping[str, Any], key: str) -> float | None:
    """``readings[key]`` as a float, or ``None`` when absent or not a finite number.

    Evaluate functions use it so that readings from another agent version (a key missing
    or of another type) yield no finding instead of an exception. Booleans are not numbers.
    """
    value = readings.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


# -- fixers ------------------------------------------------------------------------------


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class FixContext:
    """What a fixer may know about the request it runs for.

    Attributes:
        args: the technician's arguments (read-only, untrusted: validate every one);
            fixers ignore keys they do not know.
        workdir: a directory owned by the agent (``fixes/`` in its home) for quarantined
            files and undo state; it may not exist yet (create it when needed).
        protected: directories no fixer may touch (the agent's whole home: its key, its
            pinned CA, its logs), in addition to ``workdir``.
    """

    args: Mapping[str, Any]
    workdir: Path
    protected: tuple[Path, ...] = ()


@dataclass(frozen=True)
class FixPlan:
    """A fixer's dry run: exactly what ``apply`` would change. Making it changes nothing.

    Attributes:
        fixer: the fixer's name.
        summary, summary_zh: one sentence for the customer, in English and Chinese.
        changes: one human line per change ("move /tmp/x (12 MB, 9 days old) to
            quarantine"); may end with "... and N more".
        reversible: whether ``rollback`` can undo the change.
        needs_privileges: non-empty when the agent lacks a privilege the fix needs (says
            which and why); then ``apply`` must not be attempted.
        data: what ``apply`` needs (JSON-safe). It may travel to the server and back, so
            ``apply`` re-checks it and never trusts it with a command or a path blindly.
    """

    fixer: str
    summary: str
    summary_zh: str
    changes: list[str]
    reversible: bool
    needs_privileges: str = ""
    data: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True)
class FixOutcome:
    """What ``apply`` (or ``rollback``) did.

    Attributes:
        ok: the change was made (for ``rollback``: undone).
        summary: one sentence saying what happened.
        details: JSON-safe facts (bytes freed, files skipped, exit codes).
        undo: what ``rollback`` needs (JSON-safe); ``None`` when there is nothing to undo.
    """

    ok: bool
    summary: str
    details: Mapping[str, Any] = field(default_factory=_empty)
    undo: Mapping[str, Any] | None = None


PlanFunction = Callable[[FixContext], FixPlan]
"""Dry run: context in, plan out. Changes nothing. Runs on a worker thread."""
ApplyFunction = Callable[[FixContext, FixPlan], FixOutcome]
"""Makes the planned change. Runs on a worker thread."""
VerifyFunction = Callable[[FixContext, FixPlan, FixOutcome], str]
"""``""`` when the problem is gone, else one sentence saying what remains."""
RollbackFunction = Callable[[FixContext, FixOutcome], FixOutcome]
"""Undoes an applied change from :attr:`FixOutcome.undo`."""
RecoverFunction = Callable[[FixContext, FixPlan], FixOutcome]
"""What an ``apply`` cut off half-way (the agent killed) had done, from the fixer's own
journal: an outcome with ``undo`` when it can be rolled back. Runs on a worker thread."""


@dataclass(frozen=True)
class Fixer:
    """A fixer descriptor, contributed by a plugin's ``hw_fixers`` hook.

    Attributes:
        name: a dotted lower-case code like ``disk.cleanup`` (the finding-code rule);
            unique among all plugins. Findings name it in ``fixers``.
        version: version of the fixer's behaviour and of its plan's ``data``.
        summary: one line for ``hw-tech plugins``.
        addresses: the finding codes this fixer can make go away.
        plan: the dry run (raises :class:`FixRefused` or :class:`NotAvailable`).
        apply: makes the change; only called with a plan of this fixer whose
            ``needs_privileges`` is empty.
        verify: ``""`` when the problem is gone, else a sentence saying what remains.
        rollback: undoes an applied change; ``None`` when not reversible.
        recover: after the agent restarts, what an interrupted ``apply`` of a plan had
            done (from a journal the fixer writes before each change); ``None``: the
            fixer keeps no journal, and the agent reports the outcome as unknown.
        platforms: ``sys.platform`` values it runs on; ``None`` means every platform.
        timeout: seconds each step (plan, apply, verify, rollback) may take.

    Raises:
        PluginError: a field is malformed (the message names it).
    """

    name: str
    version: str
    summary: str
    addresses: frozenset[str]
    plan: PlanFunction
    apply: ApplyFunction
    verify: VerifyFunction
    rollback: RollbackFunction | None = None
    recover: RecoverFunction | None = None
    platforms: frozenset[str] | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or len(self.name) > _MAX_CODE_LENGTH
            or not CODE_PATTERN.fullmatch(self.name)
        ):
            raise PluginError(
                f"fixer name {self.name!r} is invalid: use dotted lower-case words like "
                "'disk.cleanup' (at most 64 characters)"
            )
        if not isinstance(self.version, str) or not 0 < len(self.version) <= _MAX_VERSION_LENGTH:
            raise PluginError(
                f"fixer {self.name!r}: version must be a non-empty string of at most "
                f"{_MAX_VERSION_LENGTH} characters"
            )
        if not isinstance(self.summary, str):
            raise PluginError(f"fixer {self.name!r}: summary must be a string")
        if not isinstance(self.addresses, frozenset) or not all(
            isinstance(code, str)
            and len(code) <= _MAX_CODE_LENGTH
            and CODE_PATTERN.fullmatch(code)
            for code in self.addresses
        ):
            raise PluginError(
                f"fixer {self.name!r}: addresses must be a frozenset of finding codes"
            )
        for step in ("plan", "apply", "verify"):
            if not callable(getattr(self, step)):
                raise PluginError(f"fixer {self.name!r}: {step} must be callable")
        if self.rollback is not None and not callable(self.rollback):
            raise PluginError(f"fixer {self.name!r}: rollback must be callable or None")
        if self.recover is not None and not callable(self.recover):
            raise PluginError(f"fixer {self.name!r}: recover must be callable or None")
        if self.platforms is not None and not isinstance(self.platforms, frozenset):
            raise PluginError(f"fixer {self.name!r}: platforms must be a frozenset or None")
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not 0 < self.timeout <= 600
        ):
            raise PluginError(f"fixer {self.name!r}: timeout must be in (0, 600] seconds")

    @property
    def reversible(self) -> bool:
        """Whether the fixer has a ``rollback``."""
        return self.rollback is not None

    def runs_on(self, platform: str) -> bool:
        """Whether this fixer applies to ``platform`` (a ``sys.platform`` value)."""
        return self.platforms is None or platform in self.platforms
