"""Walk an argparse parser and every subparser: the options each command takes, so a test
covers options added later without naming them (tests/server/test_cli_input.py and the
agent and tech input tests)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proto.argtypes import FloatRange, IntRange
from proto.textsafe import is_unsafe


@dataclass(frozen=True)
class Option:
    """One option (or positional) of one command: ``path`` is the command words."""

    path: tuple[str, ...]
    action: argparse.Action

    @property
    def flag(self) -> str | None:
        strings = [s for s in self.action.option_strings if s.startswith("--")]
        return strings[0] if strings else None

    def argv(self, value: str) -> list[str]:
        """The command words and this option with ``value`` (``--opt=value``, so a value
        starting with '-' is not taken for an option)."""
        if self.flag is None:
            return [*self.path, value]
        return [*self.path, f"{self.flag}={value}"]

    def __str__(self) -> str:
        return " ".join([*self.path, self.flag or self.action.dest])


def options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Option]:
    """Every option that takes a value, of ``parser`` and all its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, (*path, name))
        elif action.nargs != 0 and not isinstance(action, argparse._HelpAction):
            yield Option(path, action)


def numeric(parser: argparse.ArgumentParser) -> list[Option]:
    """The options whose type is a number: a bounded one, or a bare int/float (a bug)."""
    return [o for o in options(parser)
            if isinstance(o.action.type, IntRange | FloatRange) or o.action.type in (int, float)]


@dataclass(frozen=True)
class Outcome:
    code: int | str
    err: str


def parse(build: Callable[[], argparse.ArgumentParser], argv: list[str],
          capsys: pytest.CaptureFixture[str]) -> Outcome:
    """Parse ``argv`` in-process: the exit code (0 when it parsed) and stderr. Any other
    exception than SystemExit propagates: a traceback fails the test."""
    capsys.readouterr()
    try:
        build().parse_args(argv)
    except SystemExit as exc:
        code = exc.code if exc.code is not None else 0
        return Outcome(code, capsys.readouterr().err)
    return Outcome(0, capsys.readouterr().err)


BAD_NUMBERS = (str(10**30), "-1", "-" + str(10**30), "1" * 5000, "nan", "inf", "1e308", "x")


def assert_usage_error(out: Outcome, what: str) -> None:
    assert out.code == 2, f"{what}: exit {out.code}, want 2 (usage error)\n{out.err}"
    assert "Traceback" not in out.err, f"{what}: traceback\n{out.err}"
    assert "error: argument" in out.err, f"{what}: no usage error naming the argument\n{out.err}"
    raw = [ch for ch in out.err if ch != "\n" and is_unsafe(ch)]
    assert not raw, f"{what}: the error echoes control characters raw: {raw!r}"


def describe(option: Option) -> str:
    """The range an option's type states in its message (e.g. ``1-365 days``)."""
    kind = option.action.type
    assert isinstance(kind, IntRange | FloatRange), (
        f"{option} has type={getattr(kind, '__name__', kind)}: bound it with an IntRange or "
        "FloatRange of its package's cliargs module")
    return kind.describe()


def check_numbers(build: Callable[[], argparse.ArgumentParser],
                  capsys: pytest.CaptureFixture[str]) -> int:
    """Feed every numeric option of the parser huge, negative and non-numbers (a usage error
    stating the range each time) and its bounds (accepted). Returns how many it checked."""
    found = numeric(build())
    for option in found:
        kind = option.action.type
        text = describe(option)
        assert option.action.help and re.search(r"\d", option.action.help), (
            f"{option}: its --help must state the range ({text})")
        bad = [*BAD_NUMBERS]
        if isinstance(kind, IntRange):
            bad += [str(kind.lo - 1), str(kind.hi + 1), "1.5"]
        else:
            assert isinstance(kind, FloatRange)
            bad += [f"{kind.hi * 1.001:g}"] + ([] if kind.lo_included else [f"{kind.lo:g}"])
        for value in bad:
            if value == "-1" and isinstance(kind, IntRange) and kind.lo <= -1:
                continue
            out = parse(build, option.argv(value), capsys)
            assert_usage_error(out, f"{option} {value[:20]}")
            assert text in out.err, f"{option} {value[:20]}: the message must state {text}"
        good = [str(kind.lo), str(kind.hi)] if isinstance(kind, IntRange) else [f"{kind.hi:g}"]
        for value in good:
            # it may still stop on a missing required argument, never on this value
            out = parse(build, option.argv(value), capsys)
            assert f"argument {option.flag}" not in out.err, f"{option} {value}: {out.err}"
    return len(found)


HOSTILE_TEXT = "ab\x1b]0;owned\x07\u202ecd\x9b2J"
FREE_TYPES = (str, Path)  # paths and free text: any character is legal there


def check_hostile_text(build: Callable[[], argparse.ArgumentParser],
                       capsys: pytest.CaptureFixture[str], exempt: set[str]) -> int:
    """Every typed text option refuses a value with control and format characters, and
    says so without echoing them raw; ``exempt``: options that take a path or free text
    (``str(option)``). Returns how many it checked."""
    checked = 0
    for option in options(build()):
        kind = option.action.type
        if (kind is None or kind in FREE_TYPES or isinstance(kind, argparse.FileType)
                or option.action.choices is not None or str(option) in exempt):
            continue
        out = parse(build, option.argv(HOSTILE_TEXT), capsys)
        assert_usage_error(out, f"{option} with control characters")
        checked += 1
    return checked
