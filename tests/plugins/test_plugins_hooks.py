"""Every hook is specified, documented, implemented by a built-in and exercised here.

Like datasette's ``test_plugin_hooks_have_tests``: each hookspec ``hw_x`` needs a test
named ``test_hook_hw_x`` in this module. Also: docs/findings.md lists every finding code.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runner import PLUGIN_FAILED
from plugins import DEFAULT_PLUGINS, PROJECT_NAME, get_plugin_manager, hookspecs
from plugins.api import Probe
from proto.messages import Finding

Recorded = Callable[[str], dict[str, Any]]
FINDINGS_DOC = Path(__file__).parents[2] / "docs" / "findings.md"


def hookspec_functions() -> Iterator[tuple[str, Callable[..., Any]]]:
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if getattr(fn, f"{PROJECT_NAME}_spec", None) is not None:
            yield name, fn


@pytest.fixture(autouse=True)
def builtins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HW_PLUGINS", raising=False)


HOOKS = sorted(name for name, _ in hookspec_functions())


def test_hookspecs_found() -> None:
    assert HOOKS == ["hw_evaluate", "hw_fixers", "hw_probes"]


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_documents_firstresult(name: str) -> None:
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    firstresult = getattr(fn, f"{PROJECT_NAME}_spec")["firstresult"]
    assert "firstresult" in doc, f"{name}: the docstring must say whether it is firstresult"
    assert ("Not firstresult" not in doc) == firstresult


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_typed(name: str) -> None:
    hints = inspect.get_annotations(getattr(hookspecs, name), eval_str=True)
    assert "return" in hints
    assert set(inspect.signature(getattr(hookspecs, name)).parameters) <= set(hints)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_implemented_by_a_builtin(name: str) -> None:
    pm = get_plugin_manager(autoload=False)
    owners = {impl.plugin_name for impl in getattr(pm.hook, name).get_hookimpls()}
    assert owners & set(DEFAULT_PLUGINS), f"no built-in plugin implements {name}"


def test_plugin_hooks_have_tests() -> None:
    tests = {name for name in globals() if name.startswith("test_hook_")}
    untested = [h for h in HOOKS if not any(t.startswith(f"test_hook_{h}") for t in tests)]
    assert not untested, f"add a test_hook_<name> test for: {untested}"


def test_hook_hw_probes() -> None:
    pm = get_plugin_manager(autoload=False)
    groups = pm.hook.hw_probes()
    probes = [p for group in groups for p in group]
    assert all(isinstance(p, Probe) for p in probes)
    assert sorted(p.name for p in probes) == ["cpu", "disk", "memory", "network", "power",
                                             "processes", "services", "smart", "system",
                                             "thermal"]
    assert all(p.summary and p.version for p in probes)


def test_hook_hw_evaluate(recorded: Recorded) -> None:
    pm = get_plugin_manager(autoload=False)
    readings = recorded("disk")
    readings["mounts"][0]["percent"] = 99.0
    groups = pm.hook.hw_evaluate(probe="disk", readings=readings)
    findings = [f for group in groups for f in group]
    assert all(isinstance(f, Finding) for f in findings)
    assert [f.code for f in findings] == ["disk.almost_full"]
    # every probe plugin is asked about every probe: the others answer with nothing
    evaluators = [n for n in DEFAULT_PLUGINS if not n.startswith("plugins.fixers.")]
    assert len(groups) == len(evaluators)
    assert pm.hook.hw_evaluate(probe="no_such_probe", readings={}) == [[]] * len(evaluators)


def test_hook_hw_fixers() -> None:
    from plugins.api import Fixer

    pm = get_plugin_manager(autoload=False)
    fixers = [f for group in pm.hook.hw_fixers() for f in group]
    assert all(isinstance(f, Fixer) for f in fixers)
    assert sorted(f.name for f in fixers) == ["disk.cleanup", "dns.flush", "process.terminate",
                                             "service.restart"]
    assert all(f.summary and f.version and f.addresses for f in fixers)


def documented_codes() -> dict[str, str]:
    rows = re.findall(r"^\|\s*`([a-z0-9_.]+)`\s*\|(.*)$", FINDINGS_DOC.read_text("utf-8"), re.M)
    return dict(rows)


def test_findings_doc_lists_every_code() -> None:
    emitted = {PLUGIN_FAILED}
    for name in DEFAULT_PLUGINS:
        emitted |= set(importlib.import_module(name).FINDING_CODES)
    assert set(documented_codes()) == emitted


def test_findings_doc_rows_have_both_languages() -> None:
    for code, row in documented_codes().items():
        cells = [c.strip() for c in row.split("|")]
        assert any(re.search(r"[\u4e00-\u9fff]", c) for c in cells), f"{code}: no 中文 summary"
        assert any(re.search(r"[A-Za-z]{4,}", c) for c in cells), f"{code}: no English"
