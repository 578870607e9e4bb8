"""argparse types for the commands' numbers (``reasoner`` and the benchmarks' own options): a bad number is one
line saying which bound it broke and why, before anything runs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def count(low: int = 1, high: int | None = None, why: str = ""):
    """An argparse type: a whole number in [low, high], else one line saying which bound and why."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high} ({why}), got {value}")
        return value

    return parse


def finite(text: str) -> float:
    """An argparse type: a finite float (``float`` alone takes nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def numbers(text: str, flag: str, example: str) -> list[float]:
    """A comma-separated list of numbers given to ``flag``, else one line showing ``example``."""
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: write comma-separated numbers, e.g. {example}") from None


def check_pair_data(pair: str, data: str | None) -> None:
    """A real pair runs on a local JSONL file (nothing downloads here): one line naming what is missing."""
    if pair != "toy" and not data:
        raise ValueError(f"--pair {pair} runs on a local JSONL file: pass --data, e.g. ../shared/data/gsm8k-dev.jsonl")
    if data and not Path(data).is_file():
        raise ValueError(f"--data {data}: no such file")
