"""The committed schema and the protocol reference stay in step with the code."""

from __future__ import annotations

import importlib.util
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

import proto
from proto import messages as m
from proto import schema
from proto.errors import CloseCode
from proto.session import State

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
REGENERATE = "run `make schema` and commit docs/protocol.schema.json"


def _tag(cls: type) -> str:
    tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
    assert isinstance(tag, str)
    return tag


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def _section(text: str, anchor: str) -> str:
    """The text of the section whose heading has ``anchor``, up to the next heading of
    the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(#{1,6}) (.+)$", line)
        if match and _slug(match.group(2)) == anchor:
            level = len(match.group(1))
            end = len(lines)
            for j in range(i + 1, len(lines)):
                nxt = re.match(r"^(#{1,6}) ", lines[j])
                if nxt and len(nxt.group(1)) <= level:
                    end = j
                    break
            return "\n".join(lines[i:end])
    raise AssertionError(f"docs/protocol.md has no section #{anchor}")


# -- the committed schema ---------------------------------------------------------------


def test_committed_schema_is_current() -> None:
    committed = ROOT / "docs" / "protocol.schema.json"
    assert committed.exists(), f"docs/protocol.schema.json is missing; {REGENERATE}"
    expected = schema.render(schema.message_schema())
    actual = committed.read_text(encoding="utf-8")
    assert json.loads(actual) == schema.message_schema(), (
        f"docs/protocol.schema.json is stale (the messages changed); {REGENERATE}")
    assert actual == expected, (
        f"docs/protocol.schema.json is not formatted as generated; {REGENERATE}")


def test_schema_is_deterministic_and_sorted() -> None:
    first, second = schema.message_schema(), schema.message_schema()
    assert first == second
    assert schema.render(first) == schema.render(second)

    def check(value: object) -> None:
        if isinstance(value, dict):
            assert list(value) == sorted(value)
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)

    check(first)
    text = schema.render(first)
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert '\n  "$defs": {' in text  # two-space indent


def test_descriptions_carry_no_docstring_indentation() -> None:
    # Python 3.13 strips docstring indentation and 3.11 does not: the file must not care.
    def walk(value: object) -> None:
        if isinstance(value, dict):
            desc = value.get("description")
            if isinstance(desc, str):
                assert "\n    " not in desc
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(schema.message_schema())


def test_every_message_is_in_the_schema() -> None:
    s = schema.message_schema()
    defs = s["$defs"]
    mapping = s["discriminator"]["mapping"]
    assert s["discriminator"]["propertyName"] == "type"
    refs = {entry["$ref"] for entry in s["anyOf"]}
    for cls in m.ALL_MESSAGES:
        name, tag = cls.__name__, _tag(cls)
        assert name in defs, name
        assert mapping[tag] == f"#/$defs/{name}"
        assert f"#/$defs/{name}" in refs
        assert defs[name]["properties"]["type"] == {"enum": [tag]}
        assert defs[name]["additionalProperties"] is False
    assert len(refs) == len(m.ALL_MESSAGES) == len(mapping)


def test_all_messages_matches_the_union() -> None:
    assert set(m.ALL_MESSAGES) == set(m.AnyMessage.__args__)  # type: ignore[attr-defined]


def test_schema_includes_the_enroll_token_and_limits() -> None:
    s = schema.message_schema()
    assert s["$schema"] == schema.SCHEMA_DIALECT
    extra = s["x-helloword"]
    assert extra["enroll_token"]["schema"] == {"$ref": "#/$defs/EnrollToken"}
    assert extra["enroll_token"]["prefix"] == "hwe1."
    assert "EnrollToken" in s["$defs"]
    assert extra["max_frame_size"] == proto.MAX_FRAME_SIZE
    assert (extra["min_version"], extra["max_version"]) == (proto.MIN_VERSION, proto.MAX_VERSION)


def _make_schema() -> Any:
    """docs/make_schema.py, the command line that lives outside the sans-I/O package."""
    spec = importlib.util.spec_from_file_location("make_schema", ROOT / "docs" / "make_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_main_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert _make_schema().main([]) == 0
    out = capsys.readouterr().out
    assert out == schema.render(schema.message_schema())


def test_main_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "docs" / "protocol.schema.json"
    target.parent.mkdir()
    make_schema = _make_schema()
    monkeypatch.setattr(make_schema, "SCHEMA_PATH", target)
    assert make_schema.main(["--write"]) == 0
    assert target.read_text(encoding="utf-8") == schema.render(schema.message_schema())


# -- the prose reference ----------------------------------------------------------------


@pytest.mark.parametrize("cls", m.ALL_MESSAGES, ids=lambda c: c.__name__)
def test_every_message_has_a_section(cls: type) -> None:
    """Each message has a heading naming its tag and class, e.g. ``### `hello` (Hello)``."""
    catalogue = _section(_doc(), "messages")
    tag, name = _tag(cls), cls.__name__
    headings = re.findall(r"^#{3,4} (.+)$", catalogue, flags=re.MULTILINE)
    assert any(f"`{tag}`" in h and re.search(rf"\b{name}\b", h) for h in headings), (
        f"docs/protocol.md#messages has no heading for `{tag}` ({name})")


@pytest.mark.parametrize("cls", m.ALL_MESSAGES, ids=lambda c: c.__name__)
def test_every_field_is_documented(cls: type) -> None:
    """Each field of a message appears in its section as `` `field` ``."""
    catalogue = _section(_doc(), "messages")
    tag = _tag(cls)
    heading = next(h for h in re.findall(r"^#{3,4} (.+)$", catalogue, flags=re.MULTILINE)
                   if f"`{tag}`" in h)
    body = _section(catalogue, _slug(heading))
    for field in cls.__struct_fields__:  # type: ignore[attr-defined]
        assert f"`{field}`" in body, f"field {field!r} of {cls.__name__} is not documented"


@pytest.mark.parametrize("state", list(State), ids=str)
def test_every_state_is_documented(state: State) -> None:
    assert re.search(rf"^\| `{state.value}` \|", _section(_doc(), "states"), re.MULTILINE), (
        f"state {state.value!r} is missing from the table in docs/protocol.md#states")


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: c.name)
def test_every_close_code_is_documented(code: CloseCode) -> None:
    row = rf"^\| {code.value} \| `{code.name}` \|"
    assert re.search(row, _section(_doc(), "close-codes"), re.MULTILINE), (
        f"close code {code.value} {code.name} is missing from docs/protocol.md#close-codes")


@pytest.mark.parametrize("code", list(m.ErrorCode), ids=str)
def test_every_error_code_is_documented(code: m.ErrorCode) -> None:
    assert re.search(rf"^\| `{code.value}` \|", _section(_doc(), "errors"), re.MULTILINE)


@pytest.mark.parametrize(
    "enum", [m.Role, m.Mode, m.Severity, m.Category, m.ProbeStatus, m.Action],
    ids=lambda e: e.__name__)
def test_every_enum_value_is_documented(enum: type[StrEnum]) -> None:
    text = _doc()
    for member in enum:
        assert f"`{member.value}`" in text, f"{enum.__name__}.{member.name} is not documented"


def test_anchors_cited_in_proto_exist() -> None:
    anchors = _anchors(_doc())
    cited: set[str] = set()
    for path in sorted((ROOT / "proto").glob("*.py")):
        cited |= set(re.findall(r"docs/protocol\.md#([a-z0-9-]+)", path.read_text("utf-8")))
    assert cited, "expected proto/ docstrings to cite docs/protocol.md sections"
    missing = sorted(cited - anchors)
    assert not missing, f"docs/protocol.md lacks sections cited in proto/: {missing}"


@pytest.mark.parametrize("anchor", ["framing", "versions", "messages", "findings", "handshake",
                                    "states", "close-codes", "errors", "enrollment-token",
                                    "enrollment", "transport", "liveness"])
def test_core_sections_exist(anchor: str) -> None:
    assert anchor in _anchors(_doc())


def test_documented_limits_match_the_code() -> None:
    text = _doc()
    assert str(proto.MAX_FRAME_SIZE) in text or "1 MiB" in text
    assert 'b"helloword-auth-v1"' in text


def test_internal_links_resolve() -> None:
    text = _doc()
    anchors = _anchors(text)
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "expected cross-references in docs/protocol.md"
    assert not sorted(links - anchors), f"broken links in docs/protocol.md: {links - anchors}"
