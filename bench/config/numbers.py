"""The allowed range of every numeric command-line flag. A flag's `type=` is one of these
checkers, so a bad number is refused while the arguments are parsed: one sentence naming the
flag, the value and the range, exit status 2, before any work starts (bench/cli/parsers.py
turns `OutOfRange` into that sentence)."""
from __future__ import annotations

import math
from dataclasses import dataclass


class OutOfRange(Exception):
    """A flag's value is not a number or lies outside its range. Deliberately not a
    ValueError: argparse would catch that and print its own words instead of ours."""

    def __init__(self, problem: str, allowed: str):
        super().__init__(f"{problem}; it must be {allowed}")


@dataclass(frozen=True)
class Number:
    """An int or float flag from `low` (to `high`, if given); `low_open` / `high_open`
    exclude the bound. Floats must be finite."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    among: tuple = ()  # when given, only these values

    def allowed(self) -> str:
        what = "a whole number" if self.kind is int else "a number"
        if self.among:
            return " or ".join(_text(v) for v in self.among)
        low, high = _text(self.low), _text(self.high)
        if self.low is not None and self.high is not None:
            if self.low_open and self.high_open:
                return f"{what} between {low} and {high}, both excluded"
            if self.low_open:
                return f"{what} above {low} and at most {high}"
            return f"{what} from {low} to {high}"
        if self.low is not None:
            return f"{what} above {low}" if self.low_open else f"{what} of at least {low}"
        return "a finite number" if self.kind is float else what

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise OutOfRange("is not " + ("a whole number" if self.kind is int and _is_float(text)
                                          else "a number"), self.allowed()) from None
        if self.kind is float and not math.isfinite(value):
            raise OutOfRange("is invalid", self.allowed())
        too_low = self.low is not None and (value <= self.low if self.low_open
                                            else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open
                                              else value > self.high)
        if too_low or too_high or (self.among and value not in self.among):
            raise OutOfRange("is invalid", self.allowed())
        return value


def _text(bound: float | None) -> str:
    return "" if bound is None else f"{bound:g}"


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def whole(low: int, high: int | None = None) -> Number:
    """A whole number from `low` (to `high`)."""
    return Number(int, low, high)


def one_of(*values: int) -> Number:
    return Number(int, among=values)


POSITIVE_INT = whole(1)          # counts of things that must exist: steps, devices, images
COUNT = whole(0)                 # counts where none is meaningful: warm-up steps, workers
SEED = whole(0)                  # numpy's SeedSequence takes no negative entropy
ZERO_STAGE = whole(0, 3)         # DeepSpeed ZeRO stages 0-3
POSITIVE = Number(float, 0, low_open=True)           # rates, seconds, tolerances
NON_NEGATIVE = Number(float, 0)                      # margins, overheads, latency, σ
SHARE = Number(float, 0, 1)                          # a share of something, 0 and 1 included
PART = Number(float, 0, 1, low_open=True)            # a non-empty share: (0, 1]
CONFIDENCE = Number(float, 0, 1, low_open=True, high_open=True)
FINITE = Number(float)                               # any finite number (a noise mean)
