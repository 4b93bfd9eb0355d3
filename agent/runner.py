"""Run diagnostic probes off the event loop, each under its own timeout, each isolated.

:func:`run_probes` collects the probes of every plugin (hook ``hw_probes``), runs them
concurrently on worker threads, turns their readings into JSON-safe values
(:func:`sanitize_readings`), asks every plugin for findings (hook ``hw_evaluate``) and
returns one :class:`~proto.messages.ProbeReport` per probe, ready for a ``Result``.

A plugin can misbehave in any way and the others, and the caller, go on:

==========================================  ====================================
the plugin...                               becomes
==========================================  ====================================
raises :class:`~plugins.api.NotAvailable`   status ``not_available`` (no finding)
probe does not run on this platform         status ``not_available`` (no finding)
probe raises, returns a non-dict            status ``failed`` + ``plugin.failed``
probe exceeds its timeout                   status ``timeout`` + ``plugin.failed``
probe still hung from an earlier request    status ``timeout`` + ``plugin.failed``
``hw_evaluate`` raises, returns garbage,    a ``plugin.failed`` finding in that
an invalid finding, or hangs                probe's report (its other findings stay)
``hw_probes`` raises or returns garbage     a report ``plugin:<name>``, status ``failed``
==========================================  ====================================

Each hook implementation is called separately (keyword arguments), so a failure is
attributed to its plugin and does not hide the others' results.

A thread stuck in a system call (``statvfs`` on a dead network mount) cannot be stopped.
The runner does not start that probe again while the old call still runs, and the
default executor (:data:`PROBE_EXECUTOR`) uses daemon threads, so a hung probe never
keeps the agent from exiting nor starves the other probes of workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from enum import Enum
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

import msgspec
import pluggy

from plugins.api import NotAvailable, PluginError, Probe, ProbeContext
from plugins.simulate import ENV as SIMULATE_ENV
from plugins.simulate import SIMULATED_KEY, parse_simulation, simulated_readings
from proto.messages import Category, Finding, ProbeReport, ProbeStatus, Severity

__all__ = [
    "EVALUATE_TIMEOUT_S",
    "MAX_READINGS_BYTES",
    "PLUGIN_FAILED",
    "PROBE_EXECUTOR",
    "ProbeThreadExecutor",
    "list_probes",
    "run_probes",
    "sanitize_readings",
]

#: Finding code for a plugin that raised, hung or returned garbage.
PLUGIN_FAILED = "plugin.failed"
#: Seconds all ``hw_evaluate`` implementations together get for one probe's readings.
EVALUATE_TIMEOUT_S = 5.0
#: Approximate bound on the encoded size of one probe's readings, in bytes.
MAX_READINGS_BYTES = 64 * 1024
#: Approximate bound on the encoded size of one finding's evidence, in bytes.
MAX_EVIDENCE_BYTES = 16 * 1024
#: At most this many keys per dict and items per list (``proto.messages.Readings``).
MAX_ITEMS = 256
#: Deeper values are dropped.
MAX_DEPTH = 8
#: Longer strings are cut.
MAX_STRING_CHARS = 1024
#: Longer dict keys are cut.
MAX_KEY_CHARS = 128
#: At most this many findings per report (``proto.messages.ProbeReport``).
MAX_FINDINGS = 256
#: At most this many unknown probe names get a report of their own.
MAX_UNKNOWN_NAMES = 32
#: Error texts are cut to this many characters.
MAX_ERROR_CHARS = 200
#: Key added to readings whose size bounds cut something off.
TRUNCATED_KEY = "_truncated"

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ProbeThreadExecutor(concurrent.futures.Executor):
    """An elastic pool of daemon threads for probe calls.

    Unlike a ``ThreadPoolExecutor``, a call that never returns (``statvfs`` on a dead NFS
    mount) holds no worker that later calls wait for, and the interpreter does not wait for
    it at exit: when no worker is idle, a new one starts. Idle workers are reused (starting
    a thread per call costs more than a quick probe) and exit after ``idle_seconds``. The
    runner never restarts a probe that still runs, so the number of threads stays small.
    """

    def __init__(self, thread_name_prefix: str = "hw-probe", idle_seconds: float = 60.0
                 ) -> None:
        self._prefix = thread_name_prefix
        self._counter = itertools.count(1)
        self._closed = False
        self._idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for work and not yet promised to a submit

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        if self._closed:
            raise RuntimeError("cannot schedule new calls after shutdown")
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # delivered to the waiter, whatever it is
                future.set_exception(exc)
            else:
                future.set_result(result)

        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._queue.put(work)
        if spawn:
            name = f"{self._prefix}-{next(self._counter)}"
            threading.Thread(target=self._worker, name=name, daemon=True).start()
        return future

    def _worker(self) -> None:
        while True:
            try:
                work = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody is counting on this worker: retire
                        self._idle -= 1
                        return
                continue  # a submit promised its work to an idle worker: wait for it
            work()
            del work
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls. Running calls are daemon threads: nothing to wait for."""
        self._closed = True


#: The executor :func:`run_probes` uses unless given another.
PROBE_EXECUTOR = ProbeThreadExecutor()

# Calls that outlived their timeout and still run, by "run:<probe>" / "evaluate:<probe>".
_still_running: dict[str, concurrent.futures.Future[Any]] = {}


class _Timeout(Exception):
    pass


class _StillRunning(Exception):
    pass


class _Escaped(Exception):
    """A plugin raised a BaseException that is not an Exception (e.g. SystemExit)."""


@dataclass(frozen=True)
class _Entry:
    plugin: str
    probe: Probe


# -- public API --------------------------------------------------------------------------


async def run_probes(
    pm: pluggy.PluginManager,
    *,
    context: ProbeContext,
    names: Collection[str] | None = None,
    default_timeout: float | None = None,
    executor: concurrent.futures.Executor | None = None,
) -> list[ProbeReport]:
    """Run the probes of every plugin concurrently and evaluate their readings.

    Args:
        pm: from :func:`plugins.get_plugin_manager`.
        context: handed to every probe.
        names: run only these probes (a single string is one name; non-strings are
            ignored); a name no plugin provides gets a report with status
            ``not_available`` (the first :data:`MAX_UNKNOWN_NAMES` of them). ``None`` runs
            all, and also reports plugins whose ``hw_probes`` failed (as
            ``plugin:<plugin name>``).
        default_timeout: upper bound on every probe's own timeout, in seconds (e.g. what
            is left of the request's deadline); ``None``: each probe's own timeout.
        executor: where probes run; default :data:`PROBE_EXECUTOR`.

    Returns:
        One report per probe, in plugin registration order, then unknown names, then
        failed plugins. Never raises for a plugin's fault.
    """
    pool = PROBE_EXECUTOR if executor is None else executor
    simulation, simulation_failed = _simulation()
    entries, broken = _collect(pm)
    if names is None:
        selected = entries
        missing: list[str] = []
    else:
        if isinstance(names, str):  # one name, not a collection of one-letter names
            names = [names]
        wanted = {name for name in names if isinstance(name, str)}
        selected = [e for e in entries if e.probe.name in wanted]
        known = {e.probe.name for e in entries}
        missing = sorted(wanted - known)[:MAX_UNKNOWN_NAMES]
        broken = []
    reports = await asyncio.gather(
        *(
            _run_one(pm, entry, context, default_timeout, pool,
                     simulation.get(entry.probe.name))
            for entry in selected
        )
    )
    unknown = [
        ProbeReport(
            probe=_cut(name, 128) or "?",
            version="-",
            status=ProbeStatus.NOT_AVAILABLE,
            error=_cut(f"no probe named {name!r} on this agent", MAX_ERROR_CHARS),
        )
        for name in missing
    ]
    return [*reports, *unknown, *broken, *simulation_failed]


def list_probes(pm: pluggy.PluginManager) -> list[tuple[str, str, str]]:
    """``(name, version, summary)`` of every probe, in plugin registration order.

    Plugins whose ``hw_probes`` fails are left out (:func:`run_probes` reports them).
    """
    entries, _ = _collect(pm)
    return [(e.probe.name, e.probe.version, e.probe.summary) for e in entries]


def sanitize_readings(
    readings: Mapping[Any, Any], *, max_bytes: int = MAX_READINGS_BYTES
) -> dict[str, Any]:
    """A JSON-safe copy of ``readings``, bounded in size.

    Named tuples (psutil's) become dicts, other tuples, lists and sets become lists,
    enums their value, dates ISO strings, non-finite floats ``None``, integers beyond
    64 bits floats, strings valid UTF-8 cut to :data:`MAX_STRING_CHARS`; non-string keys
    become strings; anything else (bytes, objects) is dropped. At most
    :data:`MAX_ITEMS` entries per dict or list and :data:`MAX_DEPTH` levels; past
    ``max_bytes`` (approximate encoded size) the rest is dropped. When anything was cut,
    the result has ``"_truncated": true``.
    """
    budget = _Budget(max_bytes)
    cleaned = _clean_mapping(readings, 0, budget, limit=MAX_ITEMS - 1)
    if budget.truncated:
        cleaned[TRUNCATED_KEY] = True
    return cleaned


# -- collecting probes -------------------------------------------------------------------


def _impls(caller: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    return [i for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper)]


def _call_impl(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    return impl.function(**{name: kwargs[name] for name in impl.argnames})


def _collect(pm: pluggy.PluginManager) -> tuple[list[_Entry], list[ProbeReport]]:
    entries: list[_Entry] = []
    broken: list[ProbeReport] = []
    owner: dict[str, str] = {}
    for impl in _impls(pm.hook.hw_probes):
        plugin = impl.plugin_name
        problem = ""
        try:
            result = _call_impl(impl)
        except Exception as exc:
            problem = _describe(exc)
            result = []
        if result is None:
            result = []
        if not isinstance(result, list | tuple):
            problem = f"hw_probes returned {type(result).__name__}, expected a list of Probe"
            result = []
        for item in result:
            if not isinstance(item, Probe):
                problem = f"hw_probes returned a {type(item).__name__}, expected Probe"
            elif item.name in owner:
                problem = f"probe name {item.name!r} is already taken by {owner[item.name]}"
            else:
                owner[item.name] = plugin
                entries.append(_Entry(plugin, item))
        if problem:
            broken.append(_collect_failure(plugin, problem))
    return entries, broken


def _collect_failure(plugin: str, problem: str) -> ProbeReport:
    name = _cut(plugin, 100)
    problem = _cut(problem, MAX_ERROR_CHARS)
    return ProbeReport(
        probe=f"plugin:{name}",
        version="-",
        status=ProbeStatus.FAILED,
        error=problem,
        findings=[
            _plugin_failed(
                plugin=name,
                probe="",
                stage="collect",
                error=problem,
                summary=f"The diagnostic plugin {name} could not list its probes: {problem}",
                summary_zh=f"诊断插件 {name} 无法列出其探针：{problem}",
            )
        ],
    )


# -- running one probe -------------------------------------------------------------------


async def _run_one(
    pm: pluggy.PluginManager,
    entry: _Entry,
    context: ProbeContext,
    default_timeout: float | None,
    executor: concurrent.futures.Executor,
    simulate: list[str] | None = None,
) -> ProbeReport:
    probe, plugin = entry.probe, _cut(entry.plugin, 100)
    start = time.perf_counter()

    def report(
        status: ProbeStatus,
        readings: dict[str, Any] | None = None,
        findings: list[Finding] | None = None,
        error: str = "",
    ) -> ProbeReport:
        return ProbeReport(
            probe=probe.name,
            version=probe.version,
            status=status,
            readings=readings or {},
            findings=(findings or [])[:MAX_FINDINGS],
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
            error=_cut(error, MAX_ERROR_CHARS),
        )

    def failed(status: ProbeStatus, error: str, stage: str, en: str, zh: str) -> ProbeReport:
        return report(
            status,
            findings=[_plugin_failed(
                plugin=plugin, probe=probe.name, stage=stage, error=error,
                summary=en, summary_zh=zh, timeout_s=timeout,
            )],
            error=error,
        )

    if not probe.runs_on(sys.platform):
        if simulate:  # HW_SIMULATE: demo the fault on a machine without the hardware
            return await _simulated(pm, probe.name, None, simulate, executor, report)
        return report(ProbeStatus.NOT_AVAILABLE, error=f"not run on {sys.platform}")
    timeout = probe.timeout if default_timeout is None else min(probe.timeout, default_timeout)
    what_en = f"The diagnostic probe '{probe.name}' (plugin {plugin})"
    what_zh = f"诊断探针“{probe.name}”（插件 {plugin}）"
    try:
        outcome = await _run_and_evaluate(pm, probe, context, timeout, executor,
                                          evaluate=not simulate)
    except NotAvailable as exc:
        if simulate:  # HW_SIMULATE: demo the fault on a machine without the hardware
            return await _simulated(pm, probe.name, None, simulate, executor, report)
        return report(ProbeStatus.NOT_AVAILABLE, error=_message(exc) or "not available here")
    except _Timeout:
        error = f"did not finish within {timeout:g} s"
        return failed(ProbeStatus.TIMEOUT, error, "timeout",
                      f"{what_en} did not finish within {timeout:g} s.",
                      f"{what_zh}未在 {timeout:g} 秒内完成。")
    except _StillRunning:
        error = "still running since an earlier request; not started again"
        return failed(ProbeStatus.TIMEOUT, error, "timeout",
                      f"{what_en} is still running since an earlier request and was not "
                      "started again.",
                      f"{what_zh}仍在执行上一次请求，本次未再启动。")
    except Exception as exc:
        error = _describe(exc)
        return failed(ProbeStatus.FAILED, error, "run",
                      f"{what_en} failed: {error}", f"{what_zh}运行失败：{error}")
    if outcome.readings is None:
        error = outcome.problem
        return failed(ProbeStatus.FAILED, error, "run",
                      f"{what_en} failed: {error}", f"{what_zh}运行失败：{error}")
    readings = outcome.readings
    if simulate:
        return await _simulated(pm, probe.name, readings, simulate, executor, report)
    if outcome.findings is None:  # evaluation hung, now or since an earlier request
        findings = _evaluate_failed(probe.name, _evaluate_late())
    else:
        findings = outcome.findings
    return report(ProbeStatus.OK, readings=readings, findings=findings)


# -- one probe, one hop: run, sanitise and evaluate in one worker thread -----------------


@dataclass
class _Outcome:
    """What the worker made of one probe: ``readings`` (``None``: unusable, see
    ``problem``) and ``findings`` (``None``: not drawn, the evaluation hung)."""

    readings: dict[str, Any] | None = None
    problem: str = ""
    findings: list[Finding] | None = None


class _Job:
    """One probe's run, sanitising and evaluation, in one worker thread.

    The loop enforces both deadlines: the probe's timeout for ``run``, then
    :data:`EVALUATE_TIMEOUT_S` from the moment the evaluation starts. ``phase`` and
    ``abandoned`` are read and changed under ``lock`` so that the worker never starts an
    evaluation the loop has given up on, and the loop knows which call it left running.
    """

    __slots__ = ("abandoned", "context", "evaluate", "evaluating_since", "lock", "phase",
                 "pm", "previous_evaluation", "probe", "readings")

    def __init__(self, pm: pluggy.PluginManager, probe: Probe, context: ProbeContext,
                 evaluate: bool, previous_evaluation: concurrent.futures.Future[Any] | None
                 ) -> None:
        self.pm, self.probe, self.context = pm, probe, context
        self.evaluate = evaluate
        self.previous_evaluation = previous_evaluation
        self.lock = threading.Lock()
        self.phase = "run"
        self.abandoned = False
        self.evaluating_since = 0.0  # time.monotonic()
        self.readings: dict[str, Any] | None = None  # once sanitised

    def __call__(self) -> _Outcome:
        raw = _guarded(self.probe.run, self.context)
        if not isinstance(raw, Mapping):
            return _Outcome(problem=f"returned {type(raw).__name__}, expected a dict")
        try:
            readings = sanitize_readings(raw)
        except Exception as exc:  # a Mapping whose items() raises
            return _Outcome(problem=f"unreadable readings: {_describe(exc)}")
        if not self.evaluate:
            return _Outcome(readings=readings)
        previous = self.previous_evaluation
        if previous is not None and not previous.done():  # still hung: not started again
            return _Outcome(readings=readings)
        with self.lock:
            if self.abandoned:
                return _Outcome(readings=readings)
            self.readings = readings
            self.phase = "evaluate"
            self.evaluating_since = time.monotonic()
        try:
            findings = _evaluate_all(self.pm, self.probe.name, readings)
        except Exception as exc:  # pluggy itself failed: no plugin to blame
            findings = _evaluate_failed(self.probe.name, _describe(exc))
        return _Outcome(readings=readings, findings=findings)


_EXPIRED: Any = object()


async def _run_and_evaluate(
    pm: pluggy.PluginManager,
    probe: Probe,
    context: ProbeContext,
    seconds: float,
    executor: concurrent.futures.Executor,
    *,
    evaluate: bool,
) -> _Outcome:
    """Run ``probe`` (then evaluate its readings, if ``evaluate``) in one worker call.

    One hop to a worker thread and one back per probe: the worker wakes the loop with
    ``call_soon_threadsafe`` on a plain loop future, and the deadlines are timers of the
    loop (no ``wrap_future`` chain, no ``asyncio.wait`` per call).

    Raises:
        _Timeout: the probe did not finish within ``seconds`` (it may go on running).
        _StillRunning: the probe's call from an earlier request outlived its timeout and
            still runs.
        whatever the probe raised.
    """
    run_key, evaluate_key = f"run:{probe.name}", f"evaluate:{probe.name}"
    previous = _still_running.get(run_key)
    if previous is not None:
        if not previous.done():
            raise _StillRunning(run_key)
        del _still_running[run_key]
    previous_evaluation = _still_running.get(evaluate_key)
    if previous_evaluation is not None and previous_evaluation.done():
        del _still_running[evaluate_key]
        previous_evaluation = None
    job = _Job(pm, probe, context, evaluate, previous_evaluation)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()
    work = executor.submit(job)

    def wake(_: concurrent.futures.Future[_Outcome]) -> None:  # in the worker thread
        try:
            loop.call_soon_threadsafe(_settle, waiter, None)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    work.add_done_callback(wake)
    deadline = seconds
    while True:
        timer = loop.call_later(deadline, _settle, waiter, _EXPIRED)
        try:
            woken = await waiter
        except asyncio.CancelledError:
            _give_up(job, work, run_key, evaluate_key)
            raise
        finally:
            timer.cancel()
        if woken is not _EXPIRED:
            return work.result()
        with job.lock:
            if job.phase == "evaluate":
                left = job.evaluating_since + EVALUATE_TIMEOUT_S - time.monotonic()
                if left > 0 and not work.done():
                    waiter = loop.create_future()
                    deadline = left
                    continue
        if work.done():  # finished as the timer fired: take the result
            return work.result()
        if _give_up(job, work, run_key, evaluate_key) == "evaluate":
            return _Outcome(readings=job.readings)  # no findings: the evaluation hung
        raise _Timeout(run_key)


def _settle(waiter: asyncio.Future[Any], value: Any) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _give_up(job: _Job, work: concurrent.futures.Future[Any], run_key: str, evaluate_key: str
             ) -> str:
    """Abandon ``job``; remember its call under the key of the phase it is in if it may
    never end. Returns that phase."""
    with job.lock:
        job.abandoned = True
        phase = job.phase
    if not work.cancel() and not work.done():  # started: remember it, it may never end
        _still_running[evaluate_key if phase == "evaluate" else run_key] = work
    return phase


# -- fault simulation ($HW_SIMULATE, plugins/simulate.py) ---------------------------------


def _simulation() -> tuple[dict[str, list[str]], list[ProbeReport]]:
    """``$HW_SIMULATE`` as ``{probe: [codes]}``; a bad value: no simulation, and a failed
    report ``simulate`` saying why (the agent goes on)."""
    value = os.environ.get(SIMULATE_ENV, "")
    if not value.strip():
        return {}, []
    try:
        return parse_simulation(value), []
    except PluginError as exc:
        error = _cut(str(exc), 1000)
    return {}, [ProbeReport(
        probe="simulate",
        version="-",
        status=ProbeStatus.FAILED,
        error=_cut(error, MAX_ERROR_CHARS),
        findings=[_plugin_failed(
            plugin="simulate", probe="", stage="collect", error=error,
            summary=f"Fault simulation is off: {error}",
            summary_zh=f"故障模拟未启用：{error}",
        )],
    )]


async def _simulated(
    pm: pluggy.PluginManager,
    probe: str,
    real: dict[str, Any] | None,
    codes: list[str],
    executor: concurrent.futures.Executor,
    report: Callable[..., ProbeReport],
) -> ProbeReport:
    """Evaluate simulated readings; every finding drawn from them is marked simulated."""
    readings = sanitize_readings(simulated_readings(probe, real, codes))
    findings = await _evaluate(pm, probe, readings, executor)
    marked = [
        msgspec.structs.replace(f, evidence={**f.evidence, SIMULATED_KEY: True})
        for f in findings
    ]
    return report(ProbeStatus.OK, readings=readings, findings=marked)


def _guarded(fn: Callable[[ProbeContext], Any], context: ProbeContext) -> Any:
    """Call a probe; a SystemExit & co. must not escape into the event loop."""
    try:
        return fn(context)
    except Exception:
        raise
    except BaseException as exc:
        raise _Escaped(f"{type(exc).__name__} raised in the probe") from None


async def _off_loop(
    executor: concurrent.futures.Executor,
    key: str,
    seconds: float,
    fn: Callable[..., _T],
    *args: Any,
) -> _T:
    """Run ``fn(*args)`` on ``executor`` within ``seconds``.

    Raises:
        _Timeout: it did not finish in time (it may go on running in its thread).
        _StillRunning: the previous call under ``key`` outlived its timeout and still runs.
        whatever ``fn`` raised.
    """
    previous = _still_running.get(key)
    if previous is not None:
        if not previous.done():
            raise _StillRunning(key)
        del _still_running[key]
    work = executor.submit(fn, *args)
    waiter = asyncio.wrap_future(work)
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
    except asyncio.CancelledError:
        _abandon(key, work, waiter)
        raise
    if not done:
        _abandon(key, work, waiter)
        raise _Timeout(key)
    return waiter.result()


def _abandon(
    key: str, work: concurrent.futures.Future[Any], waiter: asyncio.Future[Any]
) -> None:
    waiter.cancel()
    if not work.cancel() and not work.done():  # started: remember it, it may never end
        _still_running[key] = work


# -- evaluating --------------------------------------------------------------------------


async def _evaluate(
    pm: pluggy.PluginManager,
    probe: str,
    readings: dict[str, Any],
    executor: concurrent.futures.Executor,
) -> list[Finding]:
    try:
        return await _off_loop(
            executor, f"evaluate:{probe}", EVALUATE_TIMEOUT_S, _evaluate_all, pm, probe, readings
        )
    except (_Timeout, _StillRunning):
        error = _evaluate_late()
    except Exception as exc:  # pluggy itself failed: no plugin to blame
        error = _describe(exc)
    return _evaluate_failed(probe, error)


def _evaluate_late() -> str:
    return f"evaluation did not finish within {EVALUATE_TIMEOUT_S:g} s"


def _evaluate_failed(probe: str, error: str) -> list[Finding]:
    return [_plugin_failed(
        plugin="hw_evaluate", probe=probe, stage="evaluate", error=error,
        summary=f"The findings of probe '{probe}' could not be drawn: {error}",
        summary_zh=f"无法分析探针“{probe}”的结果：{error}",
    )]


def _evaluate_all(pm: pluggy.PluginManager, probe: str, readings: dict[str, Any]) -> list[Finding]:
    view = MappingProxyType(readings)
    findings: list[Finding] = []
    for impl in _impls(pm.hook.hw_evaluate):
        plugin = _cut(impl.plugin_name, 100)
        problems: list[str] = []
        try:
            result = _call_impl(impl, probe=probe, readings=view)
        except Exception as exc:
            problems.append(_describe(exc))
            result = []
        if result is None:
            result = []
        if not isinstance(result, list | tuple):
            problems.append(f"returned {type(result).__name__}, expected a list of Finding")
            result = []
        for item in result:
            checked = _check_finding(item)
            if isinstance(checked, Finding):
                findings.append(checked)
            else:
                problems.append(checked)
        for error in problems[:3]:
            findings.append(_plugin_failed(
                plugin=plugin, probe=probe, stage="evaluate", error=error,
                summary=f"The diagnostic plugin {plugin} failed while evaluating probe "
                f"'{probe}': {error}",
                summary_zh=f"诊断插件 {plugin} 在分析探针“{probe}”的结果时出错：{error}",
            ))
    return findings


def _check_finding(item: object) -> Finding | str:
    """The finding with sanitised evidence, validated as the server will; or the problem."""
    if not isinstance(item, Finding):
        return f"returned a {type(item).__name__}, expected Finding"
    evidence = item.evidence if isinstance(item.evidence, Mapping) else {}
    try:
        candidate = msgspec.structs.replace(
            item,
            evidence=sanitize_readings(evidence, max_bytes=MAX_EVIDENCE_BYTES),
            summary=_utf8(item.summary) if isinstance(item.summary, str) else item.summary,
            summary_zh=(
                _utf8(item.summary_zh) if isinstance(item.summary_zh, str) else item.summary_zh
            ),
        )
        return msgspec.convert(msgspec.to_builtins(candidate), Finding)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        return _cut(f"invalid finding: {_message(exc)}", MAX_ERROR_CHARS)


def _plugin_failed(
    *,
    plugin: str,
    probe: str,
    stage: str,
    error: str,
    summary: str,
    summary_zh: str,
    timeout_s: float | None = None,
) -> Finding:
    evidence: dict[str, Any] = {"plugin": plugin, "probe": probe, "stage": stage, "error": error}
    if stage == "timeout":
        evidence["timeout_s"] = timeout_s
    return Finding(
        code=PLUGIN_FAILED,
        severity=Severity.WARNING,
        category=Category.SOFTWARE,
        summary=_cut(summary, 1000),
        summary_zh=_cut(summary_zh, 1000),
        evidence=evidence,
    )


# -- small helpers -----------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    try:
        return _cut(" ".join(str(exc).split()), MAX_ERROR_CHARS)
    except Exception:  # a broken __str__
        return ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Escaped):
        return _message(exc)
    message = _message(exc)
    name = type(exc).__name__
    return _cut(f"{name}: {message}" if message else name, MAX_ERROR_CHARS)


def _cut(text: str, limit: int) -> str:
    text = _utf8(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. a path psutil decoded with
        return text.encode("utf-8", "replace").decode("utf-8")  # surrogateescape
    return text


# -- sanitising --------------------------------------------------------------------------


class _Budget:
    __slots__ = ("left", "truncated")

    def __init__(self, size: int) -> None:
        self.left = size
        self.truncated = False

    def take(self, size: int) -> bool:
        if size > self.left:
            self.truncated = True
            self.left = 0
            return False
        self.left -= size
        return True


_DROP: Any = object()
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _clean(value: Any, depth: int, budget: _Budget) -> Any:
    """A JSON-safe copy of ``value``, or :data:`_DROP`."""
    if value is None or isinstance(value, bool):
        return value if budget.take(5) else _DROP
    if isinstance(value, Enum):
        return _clean(value.value, depth, budget)
    if isinstance(value, int):
        integer = int(value)
        if not _INT_MIN <= integer <= _INT_MAX:
            try:
                return _clean(float(integer), depth, budget)
            except OverflowError:
                return None if budget.take(5) else _DROP
        return integer if budget.take(12) else _DROP
    if isinstance(value, float):
        real = float(value)
        if not budget.take(12):
            return _DROP
        return real if math.isfinite(real) else None
    if isinstance(value, str):
        text = _cut(str.__str__(value), MAX_STRING_CHARS)
        if len(text) < len(value):
            budget.truncated = True
        return text if budget.take(len(text) + 2) else _DROP
    if isinstance(value, datetime | date | clock_time):
        return _clean(value.isoformat(), depth, budget)
    if depth >= MAX_DEPTH:
        budget.truncated = True
        return _DROP
    as_dict = getattr(value, "_asdict", None)
    if isinstance(value, tuple) and callable(as_dict):  # a namedtuple
        value = as_dict()
    if isinstance(value, Mapping):
        return _clean_mapping(value, depth, budget) if budget.take(2) else _DROP
    if isinstance(value, list | tuple | set | frozenset):
        if not budget.take(2):
            return _DROP
        items: list[Any] = []
        for item in value:
            if len(items) >= MAX_ITEMS:
                budget.truncated = True
                break
            cleaned = _clean(item, depth + 1, budget)
            if cleaned is not _DROP and budget.take(1):
                items.append(cleaned)
            elif budget.left == 0:
                break
        return items
    return _DROP


def _clean_mapping(
    value: Mapping[Any, Any], depth: int, budget: _Budget, limit: int = MAX_ITEMS
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if len(out) >= limit:
            budget.truncated = True
            break
        if isinstance(key, Enum):
            key = key.value
        if isinstance(key, str):
            name = _cut(str.__str__(key), MAX_KEY_CHARS)
        elif isinstance(key, int | float):  # includes bool
            name = str(key)
        else:
            continue
        cleaned = _clean(item, depth + 1, budget)
        if cleaned is not _DROP and budget.take(len(name) + 3):
            out[name] = cleaned
        elif budget.left == 0:
            break
    return out
