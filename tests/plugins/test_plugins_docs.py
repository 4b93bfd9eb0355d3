"""docs/plugins.md documents every hookspec and carries the example plugin verbatim.

Each hook ``hw_x`` of :mod:`plugins.hookspecs` needs a section ``### `hw_x``` that shows
its signature and says whether it is firstresult (as its spec says), and a
``test_hook_hw_x`` test in ``tests/plugins/test_plugins_hooks.py`` (STYLE.md §4).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from plugins import ENTRY_POINT_GROUP, PROJECT_NAME, hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
HOOK_TESTS = ROOT / "tests" / "plugins" / "test_plugins_hooks.py"
EXAMPLE = ROOT / "tests" / "fixtures" / "hw-example-plugin"

HOOKS = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if getattr(fn, f"{PROJECT_NAME}_spec", None) is not None
)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(name: str) -> str:
    """The text of the ``### `name``` section of docs/plugins.md ("" if missing)."""
    match = re.search(rf"^### `{re.escape(name)}`\s*$(.*?)(?=^#{{1,3}} |\Z)", doc_text(),
                      re.M | re.S)
    return match.group(1) if match else ""


def test_hooks_found() -> None:
    assert HOOKS, "plugins.hookspecs defines no hookspec"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_documented(name: str) -> None:
    text = section(name)
    assert text, f"docs/plugins.md has no '### `{name}`' section"
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert re.search(rf"`{name}\(", text), f"{name}: the section shows no signature"
    for param in params.split(", ") if params else []:
        assert f"{param}:" in text, f"{name}: argument {param!r} is not documented"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_doc_says_whether_firstresult(name: str) -> None:
    text = " ".join(section(name).split())
    firstresult = getattr(getattr(hookspecs, name), f"{PROJECT_NAME}_spec")["firstresult"]
    says_not = re.search(r"\bnot\**\s+firstresult", text, re.I) is not None
    says = re.search(r"\bis\s+\**firstresult", text, re.I) is not None
    assert says_not or says, f"{name}: the section must say whether it is firstresult"
    assert says_not != firstresult, (
        f"{name}: the section contradicts the spec (firstresult={firstresult})")


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_exercised_by_a_test(name: str) -> None:
    tests = HOOK_TESTS.read_text(encoding="utf-8")
    assert re.search(rf"^def test_hook_{name}\b", tests, re.M), \
        f"add a test_hook_{name} test to {HOOK_TESTS.name}"


def test_doc_names_no_unknown_hook() -> None:
    documented = set(re.findall(r"^### `(hw_\w+)`", doc_text(), re.M))
    assert documented == set(HOOKS)


def test_doc_explains_discovery() -> None:
    text = doc_text()
    for needle in (ENTRY_POINT_GROUP, "HW_PLUGINS", "HW_DISABLE_PLUGIN_AUTOLOAD"):
        assert needle in text, f"docs/plugins.md does not mention {needle}"


@pytest.mark.parametrize(("fence", "filename"), [("python", "hw_example_plugin.py"),
                                                  ("toml", "pyproject.toml")])
def test_doc_example_is_the_tested_package(fence: str, filename: str) -> None:
    blocks = re.findall(rf"^```{fence}\n(.*?)^```$", doc_text(), re.M | re.S)
    source = (EXAMPLE / filename).read_text(encoding="utf-8")
    assert source in blocks, f"docs/plugins.md must show {filename} of {EXAMPLE.name} verbatim"
