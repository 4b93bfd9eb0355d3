"""plugins.simulate and $HW_SIMULATE in agent.runner: simulated readings, real evaluation."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import pluggy
import pytest

from agent.runner import PLUGIN_FAILED, run_probes
from plugins import DEFAULT_PLUGINS, get_plugin_manager
from plugins.api import PluginError, ProbeContext
from plugins.simulate import (
    SIMULATED_PID,
    SIMULATIONS,
    parse_simulation,
    simulated_readings,
)
from proto.messages import Finding, ProbeReport, ProbeStatus

CTX = ProbeContext(agent_version="test")
PROBE_MODULES = [name for name in DEFAULT_PLUGINS if not name.startswith("plugins.fixers.")]


def _evaluators() -> dict[str, Callable[[Mapping[str, Any]], list[Finding]]]:
    found = {}
    for name in PROBE_MODULES:
        module = importlib.import_module(name)
        found[module.NAME] = module.evaluate
    return found


EVALUATE = _evaluators()


def _all_codes() -> set[str]:
    codes: set[str] = set()
    for name in PROBE_MODULES:
        codes.update(importlib.import_module(name).FINDING_CODES)
    return codes


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    monkeypatch.delenv("HW_PLUGINS", raising=False)
    monkeypatch.delenv("HW_SIMULATE", raising=False)
    return get_plugin_manager(autoload=False)


def by_name(reports: list[ProbeReport]) -> dict[str, ProbeReport]:
    return {r.probe: r for r in reports}


# -- the table ---------------------------------------------------------------------------


def test_every_builtin_finding_code_can_be_simulated() -> None:
    assert set(SIMULATIONS) == _all_codes()


@pytest.mark.parametrize("code", sorted(SIMULATIONS))
def test_simulation_yields_exactly_its_code_without_hardware(code: str) -> None:
    probe, _ = SIMULATIONS[code]
    readings = simulated_readings(probe, None, [code])
    assert readings["simulated"] is True
    assert [f.code for f in EVALUATE[probe](readings)] == [code]


@pytest.mark.parametrize(
    "code", sorted(c for c, (p, _) in SIMULATIONS.items() if p in {"system", "cpu", "memory",
                                                                   "disk"})
)
def test_simulation_over_recorded_healthy_readings(
    code: str, recorded: Callable[[str], dict[str, Any]]
) -> None:
    probe, _ = SIMULATIONS[code]
    real = recorded(probe)
    assert EVALUATE[probe](real) == []
    readings = simulated_readings(probe, real, [code])
    assert [f.code for f in EVALUATE[probe](readings)] == [code]
    assert real == recorded(probe)  # the real readings are not changed


def test_several_faults_of_one_probe_combine() -> None:
    for codes in (["thermal.overheating", "thermal.fan_stalled"],
                  ["thermal.fan_stalled", "thermal.overheating"]):
        readings = simulated_readings("thermal", None, codes)
        assert sorted(f.code for f in EVALUATE["thermal"](readings)) == sorted(codes)
    smart_codes = ["disk.smart_failing", "disk.sectors_pending", "disk.io_errors"]
    readings = simulated_readings("smart", None, smart_codes)
    assert len(readings["devices"]) == 1  # the same disk shows both faults
    assert sorted(f.code for f in EVALUATE["smart"](readings)) == sorted(smart_codes)


def test_simulated_processes_and_services_do_not_exist() -> None:
    readings = simulated_readings("processes", None, ["processes.runaway"])
    (found,) = EVALUATE["processes"](readings)
    assert found.evidence["pid"] == SIMULATED_PID


def test_parse_simulation() -> None:
    assert parse_simulation(" thermal.fan_stalled, power.battery_worn,,thermal.overheating,"
                            "thermal.fan_stalled ") == {
        "thermal": ["thermal.fan_stalled", "thermal.overheating"],
        "power": ["power.battery_worn"],
    }
    assert parse_simulation("") == {}


def test_parse_simulation_unknown_code_lists_known_ones() -> None:
    with pytest.raises(PluginError) as caught:
        parse_simulation("thermal.fan_stalled,thermal.on_fire")
    message = str(caught.value)
    assert "'thermal.on_fire'" in message
    assert "HW_SIMULATE" in message
    assert "thermal.fan_stalled" in message and "disk.almost_full" in message


def test_simulated_readings_refuses_code_of_another_probe() -> None:
    with pytest.raises(PluginError):
        simulated_readings("cpu", {}, ["thermal.fan_stalled"])


# -- through the runner ------------------------------------------------------------------


async def test_run_probes_with_simulation(
    pm: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HW_SIMULATE", "thermal.fan_stalled,power.battery_worn")
    reports = by_name(await run_probes(pm, context=CTX, names=["thermal", "power", "memory"]))
    for probe, code in (("thermal", "thermal.fan_stalled"), ("power", "power.battery_worn")):
        report = reports[probe]
        # even on a VM without sensors or a battery, the probe reports the simulated fault
        assert report.status == ProbeStatus.OK, report.error
        assert report.readings["simulated"] is True
        assert code in [f.code for f in report.findings]
        assert report.findings
        assert all(f.evidence["simulated"] is True for f in report.findings)
    memory = reports["memory"]
    assert memory.status == ProbeStatus.OK
    assert "simulated" not in memory.readings
    assert all("simulated" not in f.evidence for f in memory.findings)


async def test_run_probes_without_simulation(pm: pluggy.PluginManager) -> None:
    for report in await run_probes(pm, context=CTX, names=["thermal", "power", "cpu"]):
        assert "simulated" not in report.readings
        assert all("simulated" not in f.evidence for f in report.findings)


async def test_unknown_code_fails_clearly_and_probes_still_run(
    pm: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HW_SIMULATE", "thermal.fan_stalled,bogus.code")
    reports = by_name(await run_probes(pm, context=CTX, names=["memory", "thermal"]))
    failed = reports["simulate"]
    assert failed.status == ProbeStatus.FAILED
    assert "bogus.code" in failed.error
    (finding,) = failed.findings
    assert finding.code == PLUGIN_FAILED
    assert "bogus.code" in finding.evidence["error"]
    assert "thermal.fan_stalled" in finding.evidence["error"]  # the known codes are listed
    assert reports["memory"].status == ProbeStatus.OK
    for probe in ("memory", "thermal"):  # nothing is simulated when the value is bad
        assert "simulated" not in reports[probe].readings
