"""agent.fixrunner: the built-in fixers through the runner, and fixers that misbehave."""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from agent.fixrunner import (
    NOT_VERIFIED,
    FixError,
    apply_fix,
    list_fixers,
    plan_fix,
    rollback_fix,
)
from plugins import PluginError, get_plugin_manager, hookimpl
from plugins.api import FixContext, Fixer, FixOutcome, FixPlan, FixRefused
from plugins.fixers import BUILTIN_FIXER_MODULES, disk_cleanup


def with_builtin_fixers(pm: pluggy.PluginManager) -> pluggy.PluginManager:
    for name in BUILTIN_FIXER_MODULES:  # until they are in DEFAULT_PLUGINS
        if not pm.has_plugin(name):
            pm.register(importlib.import_module(name), name=name)
    return pm


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    monkeypatch.delenv("HW_PLUGINS", raising=False)
    return with_builtin_fixers(get_plugin_manager(autoload=False))


def ok_plan(name: str, **kwargs: Any) -> FixPlan:
    return FixPlan(name, "do it", "做", ["change"], True, **kwargs)


class TestFixer:
    """A fixer whose steps do what the test says."""

    __test__ = False

    def __init__(self, name: str = "test.fix", timeout: float = 5.0, **steps: Any) -> None:
        self.name, self.steps, self.timeout = name, steps, timeout
        self.applied = 0

    def _plan(self, ctx: FixContext) -> FixPlan:
        return self.steps.get("plan", lambda ctx: ok_plan(self.name))(ctx)  # type: ignore[no-any-return]

    def _apply(self, ctx: FixContext, plan: FixPlan) -> FixOutcome:
        self.applied += 1
        default = lambda c, p: FixOutcome(True, "done", undo={"x": 1})  # noqa: E731
        return self.steps.get("apply", default)(ctx, plan)  # type: ignore[no-any-return]

    def _verify(self, ctx: FixContext, plan: FixPlan, outcome: FixOutcome) -> str:
        return self.steps.get("verify", lambda c, p, o: "")(ctx, plan, outcome)  # type: ignore[no-any-return]

    def _rollback(self, ctx: FixContext, outcome: FixOutcome) -> FixOutcome:
        return self.steps.get("rollback", lambda c, o: FixOutcome(True, "undone"))(ctx, outcome)  # type: ignore[no-any-return]

    @hookimpl
    def hw_fixers(self) -> list[Fixer]:
        return [Fixer(self.name, "1", "test fixer", frozenset({"test.problem"}), self._plan,
                      self._apply, self._verify, self._rollback,
                      platforms=self.steps.get("platforms"), timeout=self.timeout)]


def add(pm: pluggy.PluginManager, plugin: object, name: str = "testplugin") -> None:
    pm.register(plugin, name=name)


def ctx(tmp_path: Path, **args: Any) -> FixContext:
    return FixContext(args=args, workdir=tmp_path / "fixes")


def boom(*args: Any) -> Any:
    raise ValueError("kaput")


# -- listing -------------------------------------------------------------------------------


def test_list_fixers(pm: pluggy.PluginManager) -> None:
    listed = {name: (version, summary, addresses)
              for name, version, summary, addresses in list_fixers(pm)}
    assert set(listed) == {"disk.cleanup", "process.terminate", "service.restart", "dns.flush"}
    assert listed["disk.cleanup"][2] == ["disk.almost_full"]
    assert listed["service.restart"][2] == ["services.failed"]
    assert listed["dns.flush"][2] == ["network.dns_failed"]
    assert "processes.runaway" in listed["process.terminate"][2]
    assert all(version and summary for version, summary, _ in listed.values())


def test_broken_and_duplicate_fixer_plugins_are_left_out(pm: pluggy.PluginManager) -> None:
    class Broken:
        @hookimpl
        def hw_fixers(self) -> list[Fixer]:
            raise RuntimeError("no")

    class Garbage:
        @hookimpl
        def hw_fixers(self) -> object:
            return ["not a fixer"]

    add(pm, Broken(), "broken")
    add(pm, Garbage(), "garbage")
    add(pm, TestFixer(name="disk.cleanup"), "impostor")
    names = [name for name, *_ in list_fixers(pm)]
    assert sorted(names) == sorted(set(names))
    assert len(names) == 4


def test_fixer_descriptor_is_validated() -> None:
    fixer = TestFixer()
    for bad in ({"name": "Disk Cleanup"}, {"name": "nodot"}, {"version": ""},
                {"addresses": {"disk.almost_full"}}, {"addresses": frozenset({"BAD"})},
                {"timeout": 0}, {"timeout": True}, {"plan": None}, {"platforms": ["linux"]}):
        fields: dict[str, Any] = {
            "name": "a.b", "version": "1", "summary": "s", "addresses": frozenset(),
            "plan": fixer._plan, "apply": fixer._apply, "verify": fixer._verify, **bad,
        }
        with pytest.raises(PluginError):
            Fixer(**fields)


# -- the built-ins through the runner ------------------------------------------------------


async def test_disk_cleanup_plan_apply_verify_rollback(
    pm: pluggy.PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(disk_cleanup, "default_locations", lambda: [temp])
    # utime cannot age the inode-change time: read it as a file that old would show it
    monkeypatch.setattr(disk_cleanup, "_inode_changed", lambda st: st.st_mtime)
    old = temp / "old.log"
    old.write_bytes(b"x" * 4096)
    os.utime(old, (time.time() - 30 * 86400,) * 2)
    plan = await plan_fix(pm, "disk.cleanup", ctx(tmp_path))
    assert [f["path"] for f in plan.data["files"]] == [str(old)]
    outcome, note = await apply_fix(pm, "disk.cleanup", ctx(tmp_path), plan)
    assert outcome.ok and note == "" and not old.exists()
    assert outcome.details["bytes_moved"] == 4096
    undone = await rollback_fix(pm, "disk.cleanup", ctx(tmp_path), outcome)
    assert undone.ok and old.read_bytes() == b"x" * 4096


async def test_refusal_becomes_fix_error(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    with pytest.raises(FixError, match="init"):
        await plan_fix(pm, "process.terminate", ctx(tmp_path, pid=1))
    with pytest.raises(FixError, match="not a systemd unit name"):
        await plan_fix(pm, "service.restart", ctx(tmp_path, unit="foo; rm -rf /"))


# -- caller mistakes -----------------------------------------------------------------------


async def test_unknown_fixer(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    with pytest.raises(FixError, match=r"no fixer named 'no\.such'"):
        await plan_fix(pm, "no.such", ctx(tmp_path))
    with pytest.raises(FixError, match="no fixer named"):
        await apply_fix(pm, "no.such", ctx(tmp_path), ok_plan("no.such"))
    with pytest.raises(FixError, match="no fixer named"):
        await rollback_fix(pm, "no.such", ctx(tmp_path), FixOutcome(True, "", undo={}))


async def test_other_platform(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    add(pm, TestFixer(platforms=frozenset({"plan9"})))
    with pytest.raises(FixError, match="does not run on"):
        await plan_fix(pm, "test.fix", ctx(tmp_path))


async def test_plan_needing_privileges_is_not_applied(pm: pluggy.PluginManager,
                                                      tmp_path: Path) -> None:
    fixer = TestFixer()
    add(pm, fixer)
    plan = ok_plan("test.fix", needs_privileges="root: because")
    outcome, note = await apply_fix(pm, "test.fix", ctx(tmp_path), plan)
    assert not outcome.ok and "root: because" in outcome.summary and note == NOT_VERIFIED
    outcome, _ = await apply_fix(pm, "test.fix", ctx(tmp_path), ok_plan("other.fix"))
    assert not outcome.ok and "other.fix" in outcome.summary
    assert fixer.applied == 0


async def test_rollback_needs_a_reversible_fixer_and_undo(pm: pluggy.PluginManager,
                                                          tmp_path: Path) -> None:
    add(pm, TestFixer())
    with pytest.raises(FixError, match="cannot be undone"):
        await rollback_fix(pm, "dns.flush", ctx(tmp_path), FixOutcome(True, "", undo={}))
    with pytest.raises(FixError, match="nothing to undo"):
        await rollback_fix(pm, "test.fix", ctx(tmp_path), FixOutcome(True, ""))
    undone = await rollback_fix(pm, "test.fix", ctx(tmp_path), FixOutcome(True, "", undo={}))
    assert undone.ok


# -- fixers that misbehave -----------------------------------------------------------------


async def test_raising_fixer(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    add(pm, TestFixer(plan=boom))
    with pytest.raises(FixError, match=r"test\.fix \(plugin testplugin\) failed while planning: "
                                       "ValueError: kaput"):
        await plan_fix(pm, "test.fix", ctx(tmp_path))
    add(pm, TestFixer(name="test.apply", apply=boom, rollback=boom), "p2")
    outcome, note = await apply_fix(pm, "test.apply", ctx(tmp_path), ok_plan("test.apply"))
    assert not outcome.ok and "ValueError: kaput" in outcome.summary and note == NOT_VERIFIED
    undone = await rollback_fix(pm, "test.apply", ctx(tmp_path), FixOutcome(True, "", undo={}))
    assert not undone.ok and "ValueError: kaput" in undone.summary


async def test_fixer_raising_system_exit_does_not_escape(pm: pluggy.PluginManager,
                                                         tmp_path: Path) -> None:
    def leave(*args: Any) -> Any:
        raise SystemExit(3)

    add(pm, TestFixer(apply=leave))
    outcome, _ = await apply_fix(pm, "test.fix", ctx(tmp_path), ok_plan("test.fix"))
    assert not outcome.ok and "SystemExit" in outcome.summary


async def test_garbage_results(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    add(pm, TestFixer(plan=lambda c: ok_plan("some.other"), apply=lambda c, p: "yes",
                      ))
    with pytest.raises(FixError, match="expected its FixPlan"):
        await plan_fix(pm, "test.fix", ctx(tmp_path))
    outcome, _ = await apply_fix(pm, "test.fix", ctx(tmp_path), ok_plan("test.fix"))
    assert not outcome.ok and "expected a FixOutcome" in outcome.summary


async def test_verify_failures_become_notes(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    add(pm, TestFixer(verify=boom))
    outcome, note = await apply_fix(pm, "test.fix", ctx(tmp_path), ok_plan("test.fix"))
    assert outcome.ok and note.startswith("Not verified:") and "kaput" in note
    add(pm, TestFixer(name="test.v2", verify=lambda c, p, o: None), "p2")
    _, note = await apply_fix(pm, "test.v2", ctx(tmp_path), ok_plan("test.v2"))
    assert note.startswith("Not verified:")
    add(pm, TestFixer(name="test.v3", verify=lambda c, p, o: "still broken"), "p3")
    _, note = await apply_fix(pm, "test.v3", ctx(tmp_path), ok_plan("test.v3"))
    assert note == "still broken"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


async def test_hanging_fixer(pm: pluggy.PluginManager, tmp_path: Path,
                             release: threading.Event) -> None:
    finished = threading.Event()

    def hang(*args: Any) -> FixOutcome:
        release.wait(30)
        finished.set()
        return FixOutcome(True, "late")

    add(pm, TestFixer(name="test.hang", apply=hang, timeout=0.2))
    outcome, note = await apply_fix(pm, "test.hang", ctx(tmp_path), ok_plan("test.hang"))
    assert not outcome.ok and "did not finish applying within 0.2 s" in outcome.summary
    assert "result is unknown" in outcome.summary and note == NOT_VERIFIED
    with pytest.raises(FixError, match="still running"):
        await plan_fix(pm, "test.hang", ctx(tmp_path))
    # the other fixers go on
    with pytest.raises(FixError, match="not a systemd unit name"):
        await plan_fix(pm, "service.restart", ctx(tmp_path, unit="-x"))
    release.set()
    assert finished.wait(10)
    plan = await plan_fix(pm, "test.hang", ctx(tmp_path))  # runs again once it ended
    assert plan.fixer == "test.hang"


async def test_refusal_in_apply_is_a_failed_outcome(pm: pluggy.PluginManager,
                                                    tmp_path: Path) -> None:
    def refuse(*args: Any) -> Any:
        raise FixRefused("not today")

    add(pm, TestFixer(apply=refuse))
    outcome, _ = await apply_fix(pm, "test.fix", ctx(tmp_path), ok_plan("test.fix"))
    assert not outcome.ok and "not today" in outcome.summary
