"""agent.runner: real built-in probes, plus small test plugins that misbehave on purpose."""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import math
import threading
from collections import namedtuple
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import pluggy
import pytest

from agent import runner
from agent.runner import PLUGIN_FAILED, list_probes, run_probes, sanitize_readings
from plugins import DEFAULT_PLUGINS, NotAvailable, get_plugin_manager, hookimpl
from plugins.api import Probe, ProbeContext, finding
from proto.messages import Category, Finding, ProbeReport, ProbeStatus, Severity

CTX = ProbeContext(server_time=datetime.now(UTC), agent_version="test")
BUILTIN_NAMES = ["system", "cpu", "memory", "disk", "network", "power", "thermal", "processes",
                 "services", "smart"]


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    monkeypatch.delenv("HW_PLUGINS", raising=False)
    return get_plugin_manager(autoload=False)


def by_name(reports: list[ProbeReport]) -> dict[str, ProbeReport]:
    return {r.probe: r for r in reports}


def assert_wire_ready(reports: list[ProbeReport]) -> None:
    """Reports pass the server's validation and survive the wire unchanged."""
    decoded = msgspec.json.decode(msgspec.json.encode(reports), type=list[ProbeReport])
    assert decoded == reports


def failed_findings(report: ProbeReport) -> list[Finding]:
    return [f for f in report.findings if f.code == PLUGIN_FAILED]


class ValuePlugin:
    """One probe that returns fixed readings."""

    def __init__(self, name: str, readings: Any, **probe: Any) -> None:
        self.name, self.readings, self.probe = name, readings, probe

    def _run(self, ctx: ProbeContext) -> Any:
        return self.readings

    @hookimpl
    def hw_probes(self) -> list[Probe]:
        return [Probe(self.name, "1", self._run, "returns fixed readings", **self.probe)]


class RaisingPlugin:
    def _run(self, ctx: ProbeContext) -> dict[str, Any]:
        raise ValueError("sensor exploded " + "x" * 5000)

    @hookimpl
    def hw_probes(self) -> list[Probe]:
        return [Probe("test_raise", "1", self._run, "always raises")]


class HangingPlugin:
    """A probe that blocks until the test releases it (the only sleep-like wait allowed)."""

    def __init__(self, name: str, timeout: float = 0.2) -> None:
        self.name, self.timeout = name, timeout
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def _run(self, ctx: ProbeContext) -> dict[str, Any]:
        self.started.set()
        try:
            self.release.wait(30)
        finally:
            self.finished.set()
        return {"released": True}

    @hookimpl
    def hw_probes(self) -> list[Probe]:
        return [Probe(self.name, "1", self._run, "hangs", timeout=self.timeout)]

    def done(self) -> None:
        self.release.set()
        assert self.finished.wait(10)


@pytest.fixture
def hanging() -> Iterator[HangingPlugin]:
    plugin = HangingPlugin("test_hang")
    yield plugin
    plugin.done()


# -- the built-in probes -----------------------------------------------------------------


async def test_builtin_probes_report_here(pm: pluggy.PluginManager) -> None:
    reports = await run_probes(pm, context=CTX)
    assert [r.probe for r in reports] == BUILTIN_NAMES
    for report in reports:
        assert report.status in (ProbeStatus.OK, ProbeStatus.NOT_AVAILABLE), report.error
        assert report.duration_ms >= 0
        assert not failed_findings(report)
    assert by_name(reports)["system"].readings["agent_version"] == "test"
    assert "clock_skew_s" in by_name(reports)["system"].readings
    assert_wire_ready(reports)


async def test_list_probes(pm: pluggy.PluginManager) -> None:
    listed = list_probes(pm)
    assert [name for name, _, _ in listed] == BUILTIN_NAMES
    assert all(version and summary for _, version, summary in listed)


async def test_names_selects_and_reports_unknown(pm: pluggy.PluginManager) -> None:
    reports = await run_probes(pm, context=CTX, names=["memory", "no_such_probe"])
    assert [(r.probe, r.status) for r in reports] == [
        ("memory", ProbeStatus.OK),
        ("no_such_probe", ProbeStatus.NOT_AVAILABLE),
    ]
    assert "no probe named" in reports[1].error
    assert_wire_ready(reports)


async def test_names_from_untrusted_args(pm: pluggy.PluginManager) -> None:
    (report,) = await run_probes(pm, context=CTX, names="memory")
    assert report.probe == "memory"
    garbage: Any = ["memory", 3, None, "", *(f"x{i}" for i in range(100))]
    reports = await run_probes(pm, context=CTX, names=garbage)
    assert reports[0].probe == "memory"
    assert len(reports) == 1 + runner.MAX_UNKNOWN_NAMES
    assert {r.status for r in reports[1:]} == {ProbeStatus.NOT_AVAILABLE}
    assert_wire_ready(reports)


async def test_findings_from_probe_readings_are_attached(pm: pluggy.PluginManager) -> None:
    """The built-in evaluate runs on a test probe's readings only when names match."""
    pm.register(ValuePlugin("test_value", {"mounts": [{"mountpoint": "/", "percent": 99.0}]}))
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    assert report.status is ProbeStatus.OK
    assert report.findings == []  # disk's rule only reads the "disk" probe


# -- misbehaving plugins -------------------------------------------------------------------


async def test_raising_and_hanging_probes_fail_alone(
    pm: pluggy.PluginManager, hanging: HangingPlugin
) -> None:
    pm.register(RaisingPlugin(), name="raiser")
    pm.register(hanging, name="hanger")
    reports = by_name(await run_probes(pm, context=CTX))
    assert set(reports) == {*BUILTIN_NAMES, "test_raise", "test_hang"}
    for name in BUILTIN_NAMES:
        assert reports[name].status in (ProbeStatus.OK, ProbeStatus.NOT_AVAILABLE)

    raised = reports["test_raise"]
    assert raised.status is ProbeStatus.FAILED
    assert raised.error.startswith("ValueError: sensor exploded")
    assert len(raised.error) <= runner.MAX_ERROR_CHARS
    (f,) = failed_findings(raised)
    assert (f.severity, f.category) == (Severity.WARNING, Category.SOFTWARE)
    assert f.evidence["plugin"] == "raiser"
    assert f.evidence["probe"] == "test_raise"
    assert f.evidence["stage"] == "run"
    assert f.summary and f.summary_zh

    hung = reports["test_hang"]
    assert hung.status is ProbeStatus.TIMEOUT
    assert hung.readings == {}
    (f,) = failed_findings(hung)
    assert f.evidence["plugin"] == "hanger"
    assert f.evidence["stage"] == "timeout"
    assert f.evidence["timeout_s"] == 0.2
    assert_wire_ready(list(reports.values()))


async def test_hung_probe_is_not_started_again(
    pm: pluggy.PluginManager, hanging: HangingPlugin
) -> None:
    pm.register(hanging)
    (first,) = await run_probes(pm, context=CTX, names=["test_hang"])
    assert first.status is ProbeStatus.TIMEOUT
    hanging.started.clear()
    (second,) = await run_probes(pm, context=CTX, names=["test_hang"])
    assert second.status is ProbeStatus.TIMEOUT
    assert "still running" in second.error
    assert not hanging.started.is_set(), "a second copy of the hung probe was started"
    hanging.done()
    (third,) = await run_probes(pm, context=CTX, names=["test_hang"])
    assert third.status is ProbeStatus.OK  # released: it runs again (and returns at once)
    assert third.readings == {"released": True}


async def test_cancelled_run_remembers_the_running_probe(pm: pluggy.PluginManager) -> None:
    plugin = HangingPlugin("test_hang_cancel", timeout=60)
    pm.register(plugin)
    try:
        task = asyncio.create_task(run_probes(pm, context=CTX, names=["test_hang_cancel"]))
        assert await asyncio.to_thread(plugin.started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (again,) = await run_probes(pm, context=CTX, names=["test_hang_cancel"])
        assert again.status is ProbeStatus.TIMEOUT
        assert "still running" in again.error
    finally:
        plugin.done()


async def test_default_timeout_caps_probe_timeout(pm: pluggy.PluginManager) -> None:
    plugin = HangingPlugin("test_hang_capped", timeout=60)
    pm.register(plugin)
    try:
        (report,) = await run_probes(
            pm, context=CTX, names=["test_hang_capped"], default_timeout=0.1
        )
    finally:
        plugin.done()
    assert report.status is ProbeStatus.TIMEOUT
    assert failed_findings(report)[0].evidence["timeout_s"] == 0.1


async def test_not_available(pm: pluggy.PluginManager) -> None:
    class Plugin:
        def _run(self, ctx: ProbeContext) -> dict[str, Any]:
            raise NotAvailable("no battery in this machine")

        @hookimpl
        def hw_probes(self) -> list[Probe]:
            return [Probe("test_na", "1", self._run, "raises NotAvailable")]

    pm.register(Plugin())
    (report,) = await run_probes(pm, context=CTX, names=["test_na"])
    assert report.status is ProbeStatus.NOT_AVAILABLE
    assert report.error == "no battery in this machine"
    assert report.findings == []


async def test_other_platform_is_not_available_and_not_run(pm: pluggy.PluginManager) -> None:
    ran = threading.Event()

    class Plugin:
        def _run(self, ctx: ProbeContext) -> dict[str, Any]:
            ran.set()
            return {}

        @hookimpl
        def hw_probes(self) -> list[Probe]:
            return [Probe("test_os", "1", self._run, "elsewhere", platforms=frozenset({"os2"}))]

    pm.register(Plugin())
    (report,) = await run_probes(pm, context=CTX, names=["test_os"])
    assert report.status is ProbeStatus.NOT_AVAILABLE
    assert not ran.is_set()


@pytest.mark.parametrize("returned", [None, [1, 2], "text"])
async def test_probe_returning_no_dict_fails(pm: pluggy.PluginManager, returned: Any) -> None:
    pm.register(ValuePlugin("test_bad_return", returned))
    (report,) = await run_probes(pm, context=CTX, names=["test_bad_return"])
    assert report.status is ProbeStatus.FAILED
    assert "expected a dict" in report.error
    assert failed_findings(report)


async def test_probe_raising_system_exit_is_contained(pm: pluggy.PluginManager) -> None:
    class Plugin:
        def _run(self, ctx: ProbeContext) -> dict[str, Any]:
            raise SystemExit(3)

        @hookimpl
        def hw_probes(self) -> list[Probe]:
            return [Probe("test_exit", "1", self._run, "exits")]

    pm.register(Plugin())
    (report,) = await run_probes(pm, context=CTX, names=["test_exit"])
    assert report.status is ProbeStatus.FAILED
    assert report.error == "SystemExit raised in the probe"


async def test_broken_hw_probes_is_reported(pm: pluggy.PluginManager) -> None:
    class Broken:
        @hookimpl
        def hw_probes(self) -> list[Probe]:
            raise RuntimeError("cannot list")

    class Duplicate:
        @hookimpl
        def hw_probes(self) -> list[Any]:
            return [Probe("cpu", "9", lambda ctx: {}, "a second cpu"), "not a probe"]

    pm.register(Broken(), name="broken")
    pm.register(Duplicate(), name="dup")
    reports = by_name(await run_probes(pm, context=CTX))
    assert reports["cpu"].version == "1"  # the first plugin keeps the name
    assert reports["plugin:broken"].status is ProbeStatus.FAILED
    assert "RuntimeError: cannot list" in reports["plugin:broken"].error
    assert failed_findings(reports["plugin:broken"])[0].evidence["stage"] == "collect"
    assert reports["plugin:dup"].status is ProbeStatus.FAILED
    assert_wire_ready(list(reports.values()))
    assert [name for name, _, _ in list_probes(pm)] == BUILTIN_NAMES


class EvaluatePlugin:
    """Draws findings for ``test_value`` through ``behave(readings)``."""

    def __init__(self, behave: Any) -> None:
        self.behave = behave

    @hookimpl
    def hw_evaluate(self, probe: str, readings: Mapping[str, Any]) -> Any:
        return self.behave(readings) if probe == "test_value" else []


def good_finding(readings: Mapping[str, Any]) -> Finding:
    return finding(
        "test.seen", Severity.INFO, Category.SOFTWARE, "seen", "看到了", readings
    )


async def test_raising_evaluate_becomes_finding(pm: pluggy.PluginManager) -> None:
    def boom(readings: Mapping[str, Any]) -> list[Finding]:
        raise KeyError("missing")

    pm.register(ValuePlugin("test_value", {"a": 1}))
    pm.register(EvaluatePlugin(boom), name="boom")
    pm.register(EvaluatePlugin(lambda r: [good_finding(r)]), name="good")
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    assert report.status is ProbeStatus.OK
    codes = sorted(f.code for f in report.findings)
    assert codes == [PLUGIN_FAILED, "test.seen"]
    (f,) = failed_findings(report)
    assert f.evidence["plugin"] == "boom"
    assert f.evidence["stage"] == "evaluate"
    assert "KeyError" in f.evidence["error"]
    assert_wire_ready([report])


async def test_invalid_findings_are_replaced(pm: pluggy.PluginManager) -> None:
    def mixed(readings: Mapping[str, Any]) -> list[Any]:
        bad_code = Finding(
            code="Not A Code", severity=Severity.INFO, category=Category.SOFTWARE, summary="x"
        )
        too_long = Finding(
            code="test.long", severity=Severity.INFO, category=Category.SOFTWARE,
            summary="x" * 5000,
        )
        return [bad_code, too_long, "junk", good_finding(readings)]

    pm.register(ValuePlugin("test_value", {"a": 1}))
    pm.register(EvaluatePlugin(mixed), name="mixed")
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    assert [f.code for f in report.findings] == ["test.seen", *[PLUGIN_FAILED] * 3]
    errors = [f.evidence["error"] for f in failed_findings(report)]
    assert all(e.startswith(("invalid finding", "returned a str")) for e in errors)
    assert_wire_ready([report])


async def test_evaluate_returning_garbage(pm: pluggy.PluginManager) -> None:
    pm.register(ValuePlugin("test_value", {"a": 1}))
    pm.register(EvaluatePlugin(lambda r: 42), name="garbage")
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    (f,) = report.findings
    assert f.code == PLUGIN_FAILED and "expected a list" in f.evidence["error"]


async def test_hanging_evaluate_becomes_finding(
    pm: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "EVALUATE_TIMEOUT_S", 0.1)
    release, finished = threading.Event(), threading.Event()

    def hang(readings: Mapping[str, Any]) -> list[Finding]:
        try:
            release.wait(30)
        finally:
            finished.set()
        return []

    pm.register(ValuePlugin("test_value", {"a": 1}))
    pm.register(EvaluatePlugin(hang), name="hang")
    try:
        (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    finally:
        release.set()
        assert finished.wait(10)
    assert report.status is ProbeStatus.OK
    assert report.readings == {"a": 1}
    (f,) = report.findings
    assert f.code == PLUGIN_FAILED and f.evidence["stage"] == "evaluate"


async def test_a_hung_evaluation_is_not_started_again_and_the_probe_still_runs(
    pm: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "EVALUATE_TIMEOUT_S", 0.1)
    release, finished = threading.Event(), threading.Event()
    calls: list[Mapping[str, Any]] = []

    def hang(readings: Mapping[str, Any]) -> list[Finding]:
        calls.append(readings)
        try:
            release.wait(30)
        finally:
            finished.set()
        return [good_finding(readings)]

    plugin = ValuePlugin("test_value", {"a": 1})
    pm.register(plugin)
    pm.register(EvaluatePlugin(hang), name="hang")
    try:
        (first,) = await run_probes(pm, context=CTX, names=["test_value"])
        plugin.readings = {"a": 2}
        (second,) = await run_probes(pm, context=CTX, names=["test_value"])
    finally:
        release.set()
    assert [r.status for r in (first, second)] == [ProbeStatus.OK, ProbeStatus.OK]
    assert second.readings == {"a": 2}, "the probe itself ran again"
    assert [dict(r) for r in calls] == [{"a": 1}], "the hung evaluation was not started again"
    for report in (first, second):
        (f,) = report.findings
        assert f.code == PLUGIN_FAILED and f.evidence["stage"] == "evaluate"
        assert "did not finish" in f.evidence["error"]
    assert finished.wait(10)
    for _ in range(100):  # the hung call has ended: a next request evaluates again
        (third,) = await run_probes(pm, context=CTX, names=["test_value"])
        if not failed_findings(third):
            break
    assert [f.code for f in third.findings] == ["test.seen"]


async def test_an_evaluation_has_its_own_time_after_the_probes(
    pm: pluggy.PluginManager
) -> None:
    """The probe's timeout bounds the probe; the evaluation gets EVALUATE_TIMEOUT_S more."""
    probe_done = threading.Event()

    class Quick:
        @hookimpl
        def hw_probes(self) -> list[Probe]:
            return [Probe("test_value", "1", lambda ctx: {"a": 1}, "quick", timeout=0.1)]

    def slow(readings: Mapping[str, Any]) -> list[Finding]:
        probe_done.wait(0.5)  # longer than the probe's own timeout (never set)
        return [good_finding(readings)]

    pm.register(Quick())
    pm.register(EvaluatePlugin(slow), name="slow")
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    assert report.status is ProbeStatus.OK
    assert [f.code for f in report.findings] == ["test.seen"]


async def test_one_hop_to_a_worker_per_probe(pm: pluggy.PluginManager) -> None:
    """Running, sanitising and evaluating a probe is one call on the executor."""
    submitted: list[Any] = []

    class Counting(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    pm.register(EvaluatePlugin(lambda r: [good_finding(r)]), name="good")
    pm.register(ValuePlugin("test_value", {"a": 1}))
    with Counting(max_workers=2) as pool:
        reports = await run_probes(pm, context=CTX, names=["memory", "test_value"],
                                   executor=pool)
    assert [r.status for r in reports] == [ProbeStatus.OK, ProbeStatus.OK]
    assert [f.code for f in by_name(reports)["test_value"].findings] == ["test.seen"]
    assert len(submitted) == 2


async def test_evidence_is_sanitised(pm: pluggy.PluginManager) -> None:
    def odd(readings: Mapping[str, Any]) -> list[Finding]:
        return [finding("test.odd", Severity.INFO, Category.SOFTWARE, "odd", "奇怪",
                        {"pair": (1, 2), "blob": b"\x00", "nan": math.nan})]

    pm.register(ValuePlugin("test_value", {"a": 1}))
    pm.register(EvaluatePlugin(odd))
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    (f,) = report.findings
    assert f.evidence == {"pair": [1, 2], "nan": None}


async def test_summary_with_undecodable_path_is_repaired(pm: pluggy.PluginManager) -> None:
    """psutil decodes odd mount paths with surrogateescape; the wire needs valid UTF-8."""

    def path(readings: Mapping[str, Any]) -> list[Finding]:
        return [finding("test.path", Severity.INFO, Category.SOFTWARE, "Disk /mnt/\udcff",
                        "磁盘 /mnt/\udcff", {"mountpoint": "/mnt/\udcff"})]

    pm.register(ValuePlugin("test_value", {"a": 1}))
    pm.register(EvaluatePlugin(path))
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    (f,) = report.findings
    assert (f.summary, f.summary_zh, f.evidence) == (
        "Disk /mnt/?", "磁盘 /mnt/?", {"mountpoint": "/mnt/?"}
    )
    assert_wire_ready([report])


async def test_evaluate_sees_read_only_sanitised_readings(pm: pluggy.PluginManager) -> None:
    seen: list[Any] = []

    def look(readings: Mapping[str, Any]) -> list[Finding]:
        seen.append(readings)
        with pytest.raises(TypeError):
            readings["x"] = 1  # type: ignore[index]
        return []

    pm.register(ValuePlugin("test_value", {"t": (1, 2)}))
    pm.register(EvaluatePlugin(look))
    await run_probes(pm, context=CTX, names=["test_value"])
    assert dict(seen[0]) == {"t": [1, 2]}


async def test_custom_executor(pm: pluggy.PluginManager) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        reports = await run_probes(pm, context=CTX, names=["memory", "system"], executor=pool)
    assert [r.status for r in reports] == [ProbeStatus.OK, ProbeStatus.OK]


async def test_probes_run_concurrently(pm: pluggy.PluginManager) -> None:
    """Two probes that each wait for the other to start can only finish if concurrent."""
    a_started, b_started = threading.Event(), threading.Event()

    class Pair:
        def _a(self, ctx: ProbeContext) -> dict[str, Any]:
            a_started.set()
            return {"met": b_started.wait(10)}

        def _b(self, ctx: ProbeContext) -> dict[str, Any]:
            b_started.set()
            return {"met": a_started.wait(10)}

        @hookimpl
        def hw_probes(self) -> list[Probe]:
            return [Probe("test_a", "1", self._a, "a"), Probe("test_b", "1", self._b, "b")]

    pm.register(Pair())
    reports = await run_probes(pm, context=CTX, names=["test_a", "test_b"])
    assert [r.readings for r in reports] == [{"met": True}, {"met": True}]


def test_default_plugins_tuple_matches_runner_order() -> None:
    probes = [n for n in DEFAULT_PLUGINS if not n.startswith("plugins.fixers.")]
    assert [name.removeprefix("plugins.") for name in probes] == BUILTIN_NAMES


# -- sanitising --------------------------------------------------------------------------

Pair = namedtuple("Pair", "x y")  # the kind of value psutil returns


class Colour(enum.Enum):
    RED = "red"


def test_sanitize_converts_and_drops() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    cleaned = sanitize_readings({
        "named": Pair(1, 2.5),
        "tuple": (1, "a", None, True),
        "set": frozenset({7}),
        "bytes": b"raw",
        "object": object(),
        "nan": math.nan,
        "inf": -math.inf,
        "big": 2**70,
        "huge": 10**400,
        "when": when,
        "colour": Colour.RED,
        "status": ProbeStatus.OK,
        "surrogate": "/mnt/\udcff",
        3: "int key",
        ("tuple", "key"): "dropped",
        "nested": {"list": [Pair(x=[1], y={"deep": (2,)})]},
    })
    assert cleaned == {
        "named": {"x": 1, "y": 2.5},
        "tuple": [1, "a", None, True],
        "set": [7],
        "nan": None,
        "inf": None,
        "big": float(2**70),
        "huge": None,
        "when": "2026-01-02T03:04:05+00:00",
        "colour": "red",
        "status": "ok",
        "surrogate": "/mnt/?",
        "3": "int key",
        "nested": {"list": [{"x": [1], "y": {"deep": [2]}}]},
    }
    assert type(cleaned["status"]) is str
    msgspec.json.encode(cleaned)


def test_sanitize_bounds_size() -> None:
    cleaned = sanitize_readings({
        "many_keys": {f"k{i}": i for i in range(1000)},
        "long_list": list(range(1000)),
        "long_text": "é" * 10_000,
        "deep": _nest(20),
        **{f"top{i}": i for i in range(300)},
    })
    assert cleaned[runner.TRUNCATED_KEY] is True
    assert len(cleaned) <= 256
    assert len(cleaned["many_keys"]) == runner.MAX_ITEMS
    assert len(cleaned["long_list"]) == runner.MAX_ITEMS
    assert len(cleaned["long_text"]) == runner.MAX_STRING_CHARS
    depth, node = 0, cleaned["deep"]
    while isinstance(node, dict) and "d" in node:
        depth, node = depth + 1, node["d"]
    assert depth < runner.MAX_DEPTH
    ProbeReport(probe="p", version="1", status=ProbeStatus.OK, readings=cleaned)
    assert msgspec.json.decode(
        msgspec.json.encode(ProbeReport(probe="p", version="1", status=ProbeStatus.OK,
                                        readings=cleaned)),
        type=ProbeReport,
    ).readings == cleaned


def test_sanitize_byte_budget() -> None:
    cleaned = sanitize_readings({f"k{i}": "x" * 1000 for i in range(200)}, max_bytes=20_000)
    assert cleaned[runner.TRUNCATED_KEY] is True
    assert len(msgspec.json.encode(cleaned)) <= 20_000 + 100


def test_sanitize_keeps_small_readings_exact() -> None:
    readings = {"a": 1, "b": [1.5, "x", None, False], "c": {"d": {"e": []}}}
    assert sanitize_readings(readings) == readings
    assert runner.TRUNCATED_KEY not in sanitize_readings(readings)


def _nest(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        node = {"d": node}
    return node


async def test_weird_readings_through_runner(pm: pluggy.PluginManager) -> None:
    pm.register(ValuePlugin("test_value", {"x": (1, 2), "o": object(), "s": "\udcff"}))
    (report,) = await run_probes(pm, context=CTX, names=["test_value"])
    assert report.readings == {"x": [1, 2], "s": "?"}
    assert_wire_ready([report])


def test_probe_executor_reuses_idle_workers_and_outgrows_hung_ones() -> None:
    import threading

    from agent.runner import ProbeThreadExecutor

    ex = ProbeThreadExecutor(thread_name_prefix="t-exec")
    first = ex.submit(lambda: threading.current_thread().name).result(timeout=10)
    # The worker marks itself idle right after finishing; wait for that, not for time.
    wait = threading.Event()
    for _ in range(1000):
        if ex._idle == 1:
            break
        wait.wait(0.01)
    second = ex.submit(lambda: threading.current_thread().name).result(timeout=10)
    assert second == first, "an idle worker is reused"
    release = threading.Event()
    hung = ex.submit(release.wait)
    third = ex.submit(lambda: threading.current_thread().name)
    third.result(timeout=10)  # finishes while the hung call still holds a worker
    assert not hung.done()
    assert len([t for t in threading.enumerate() if t.name.startswith("t-exec")]) == 2
    release.set()
    assert hung.result(timeout=10) is True
