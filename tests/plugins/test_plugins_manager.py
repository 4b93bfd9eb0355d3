"""plugins.get_plugin_manager: built-ins, $HW_PLUGINS, entry-point autoload."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

import plugins
from plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, PluginError, get_plugin_manager

PROBE_MODULE = """
from plugins import hookimpl
from plugins.api import Probe


def _run(ctx):
    return {{"hello": "world"}}


@hookimpl
def hw_probes():
    return [Probe(name="{probe}", version="1", run=_run, summary="test probe")]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugins.PLUGINS_ENV, raising=False)
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV, raising=False)


def probe_names(pm: object) -> set[str]:
    return {p.name for group in pm.hook.hw_probes() for p in group}  # type: ignore[attr-defined]


def write_module(folder: Path, source: str) -> str:
    """A uniquely named importable module in ``folder``; returns its name."""
    name = f"hwtest_{uuid.uuid4().hex[:12]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return name


def test_builtins_registered_in_order() -> None:
    pm = get_plugin_manager(autoload=False)
    names = [name for name, _ in pm.list_name_plugin()]
    assert names == list(DEFAULT_PLUGINS)
    assert probe_names(pm) == {"system", "cpu", "memory", "disk", "network", "power",
                               "thermal", "processes", "services", "smart"}


def test_hw_plugins_env_registers_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    first = write_module(tmp_path, PROBE_MODULE.format(probe="test_env_one"))
    second = write_module(tmp_path, PROBE_MODULE.format(probe="test_env_two"))
    monkeypatch.setenv(plugins.PLUGINS_ENV, f" {first}, ,{second},plugins.cpu ")
    pm = get_plugin_manager(autoload=False)
    assert pm.has_plugin(first) and pm.has_plugin(second)
    assert {"test_env_one", "test_env_two"} <= probe_names(pm)
    assert len(pm.get_plugins()) == len(DEFAULT_PLUGINS) + 2  # plugins.cpu only once


def test_hw_plugins_env_unimportable_module_says_what_to_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(plugins.PLUGINS_ENV, "no_such_module_hwtest")
    with pytest.raises(PluginError, match=r"HW_PLUGINS.*no_such_module_hwtest.*PYTHONPATH"):
        get_plugin_manager(autoload=False)


def test_hw_plugins_env_module_failing_on_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, "raise RuntimeError('broken plugin')\n")
    monkeypatch.setenv(plugins.PLUGINS_ENV, name)
    with pytest.raises(PluginError, match="RuntimeError: broken plugin"):
        get_plugin_manager(autoload=False)


def test_hookimpl_without_spec_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, """
        from plugins import hookimpl

        @hookimpl
        def hw_no_such_hook():
            return []
    """)
    monkeypatch.setenv(plugins.PLUGINS_ENV, name)
    with pytest.raises(PluginError, match="hook specifications"):
        get_plugin_manager(autoload=False)


def test_hookimpl_with_unknown_argument_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, """
        from plugins import hookimpl

        @hookimpl
        def hw_evaluate(probe, data):
            return []
    """)
    monkeypatch.setenv(plugins.PLUGINS_ENV, name)
    with pytest.raises(PluginError, match="hook specifications"):
        get_plugin_manager(autoload=False)


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution on sys.path that declares a plugin in ENTRY_POINT_GROUP."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_module(tmp_path, PROBE_MODULE.format(probe="test_entry_point"))
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n{module} = {module}\n", encoding="utf-8"
    )
    return module


def test_entry_point_plugins_autoload(installed_plugin: str) -> None:
    pm = get_plugin_manager()
    assert pm.has_plugin(installed_plugin)
    assert "test_entry_point" in probe_names(pm)


def test_autoload_false_skips_entry_points(installed_plugin: str) -> None:
    pm = get_plugin_manager(autoload=False)
    assert not pm.has_plugin(installed_plugin)
    assert "test_entry_point" not in probe_names(pm)


@pytest.mark.parametrize("autoload", [None, True])
def test_env_flag_disables_autoload(
    installed_plugin: str, monkeypatch: pytest.MonkeyPatch, autoload: bool | None
) -> None:
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    pm = get_plugin_manager(autoload=autoload)
    assert not pm.has_plugin(installed_plugin)


def test_env_flag_empty_means_autoload(
    installed_plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "")
    assert get_plugin_manager().has_plugin(installed_plugin)


def test_hw_plugins_still_registered_without_autoload(
    installed_plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    monkeypatch.setenv(plugins.PLUGINS_ENV, installed_plugin)
    assert get_plugin_manager().has_plugin(installed_plugin)


def test_broken_entry_point_says_how_to_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    dist = tmp_path / "hwtest_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hwtest-broken\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nbroken = hwtest_module_that_is_missing\n", encoding="utf-8"
    )
    with pytest.raises(PluginError, match="HW_DISABLE_PLUGIN_AUTOLOAD=1"):
        get_plugin_manager()
    assert get_plugin_manager(autoload=False).get_plugins()
