"""argparse ``type=`` helpers the three CLIs share: bounded numbers and checked names.

Every number a CLI takes is bounded here, so nothing overflows into SQLite, ``datetime`` or
the wire, and the usage error (exit 2) states the range. Each package's own ``cliargs``
module builds its options' types from these (``server/cliargs.py``, ``agent/cliargs.py``,
``tech/cliargs.py``); a test walks every parser and feeds each of them ``10**30`` and ``-1``
(``tests/server/test_cli_input.py``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

from .textsafe import check_name, safe_repr

__all__ = ["FloatRange", "IntRange", "name_arg"]


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class IntRange:
    """A whole number from ``lo`` to ``hi`` (both included); ``unit`` names what it counts
    (``"days"``), for the message."""

    lo: int
    hi: int
    unit: str = ""

    @property
    def __name__(self) -> str:  # argparse names the type in some messages
        return "whole number"

    def describe(self) -> str:
        return f"{self.lo}-{self.hi}" + (f" {self.unit}" if self.unit else "")

    def __call__(self, text: str) -> int:
        raw = text.strip()
        digits = raw[1:] if raw[:1] in "+-" else raw
        if not digits.isascii() or not digits.isdigit():
            raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a whole number; "
                                             f"give one from {self.describe()}")
        if len(digits) > 18:  # no int() of thousands of digits
            side = f"less than {self.lo}" if raw[:1] == "-" else f"more than {self.hi}"
            raise argparse.ArgumentTypeError(f"{raw[:8]}… ({len(digits)} digits) is {side}; "
                                             f"give a whole number from {self.describe()}")
        value = int(raw)
        if value < self.lo:
            raise argparse.ArgumentTypeError(f"{value} is less than {self.lo}; give a whole "
                                             f"number from {self.describe()}")
        if value > self.hi:
            raise argparse.ArgumentTypeError(f"{value} is more than {self.hi}; give a whole "
                                             f"number from {self.describe()}")
        return value


@dataclass(frozen=True)
class FloatRange:
    """A finite number above ``lo`` (or from ``lo`` with ``lo_included``) up to ``hi``."""

    lo: float
    hi: float
    unit: str = ""
    lo_included: bool = False

    @property
    def __name__(self) -> str:
        return "number"

    def describe(self) -> str:
        low = f"from {_num(self.lo)}" if self.lo_included else f"more than {_num(self.lo)}"
        return f"{low} up to {_num(self.hi)}" + (f" {self.unit}" if self.unit else "")

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{safe_repr(text)} is not a number; give one "
                                             f"{self.describe()}")
        too_low = value < self.lo or (value == self.lo and not self.lo_included)
        if too_low or value > self.hi:
            raise argparse.ArgumentTypeError(f"{_num(value)} is out of range; give a number "
                                             f"{self.describe()}")
        return value


def name_arg(what: str, max_length: int, *, min_length: int = 1
             ) -> Callable[[str], str]:
    """argparse type: a name or short text (stripped) of ``min_length``-``max_length``
    characters with no control or format character (:func:`proto.textsafe.check_name`)."""

    def parse(text: str) -> str:
        try:
            return check_name(text, what=what, max_length=max_length, min_length=min_length)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = what
    return parse
