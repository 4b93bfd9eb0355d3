"""proto.textsafe: one rule for what a terminal must not receive raw (Cc, Cf, Cs, Zl, Zp)."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.textsafe import check_name, is_unsafe, printable, safe_json_dumps, safe_repr


def unsafe_in(text: str) -> list[str]:
    return [ch for ch in text if ch != "\n" and is_unsafe(ch)]


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12))
def test_safe_json_dumps_decodes_to_the_same_value_with_nothing_unsafe_raw(value: object
                                                                           ) -> None:
    text = safe_json_dumps(value)
    assert not unsafe_in(text)
    assert json.loads(text) == value


@given(st.text())
def test_printable_leaves_nothing_unsafe_and_keeps_the_rest(text: str) -> None:
    shown = printable(text)
    assert not unsafe_in(shown)
    safe = "".join(ch for ch in text if not is_unsafe(ch) or ch == "\n")
    assert all(ch in shown for ch in safe)
    assert "\n" not in printable(text, keep_newlines=False)


@pytest.mark.parametrize(("ch", "escaped"), [
    ("\x1b", "\\u001b"), ("\x9b", "\\u009b"), ("\u202e", "\\u202e"), ("\u200b", "\\u200b"),
    ("\u2066", "\\u2066"), ("\ufeff", "\\ufeff"), ("\u2028", "\\u2028"), ("\x7f", "\\u007f"),
    ("\U000e0041", "\\udb40\\udc41"),  # a tag character, beyond the BMP: a surrogate pair
])
def test_each_kind_of_unsafe_character_is_escaped(ch: str, escaped: str) -> None:
    assert unicodedata.category(ch) in {"Cc", "Cf", "Zl"}
    assert safe_json_dumps(f"a{ch}b") == f'"a{escaped}b"'


def test_chinese_and_other_printable_text_stays_readable() -> None:
    assert safe_json_dumps({"城市": "上海 😀"}, indent=None) == '{"城市": "上海 😀"}'
    assert printable("王 先生\tok") == "王 先生\\x09ok"


def test_check_name_and_safe_repr() -> None:
    assert check_name("  Li Wei ", what="customer", max_length=8) == "Li Wei"
    with pytest.raises(ValueError, match="must not be empty"):
        check_name("   ", what="customer", max_length=8)
    with pytest.raises(ValueError, match="9 characters long; at most 8"):
        check_name("x" * 9, what="customer", max_length=8)
    with pytest.raises(ValueError, match=r"U\+202E") as info:
        check_name("ab\u202ecd", what="customer", max_length=8)
    assert not unsafe_in(str(info.value))
    assert safe_repr("a\x1b" * 100, limit=4) == "'a\\x1ba\\x1b'… (200 characters)"
