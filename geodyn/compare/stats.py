"""Paired effects and their verdicts.

A claim "method beats baseline" is tested on per-seed paired differences
$d_s = m_s - b_s$ (the same seed initialises both and orders both's mini-batches). Their mean
$\\bar d$ has the Student-t confidence interval
$\\bar d \\pm t_{1 - \\alpha/2,\\, n-1}\\, s_d / \\sqrt n$ (``scipy.stats.t``). The verdict reads
the interval against the claimed sign: it *reproduces* the claim when it excludes 0 on the
claimed side, *contradicts* it when it excludes 0 on the other side, and is *inconclusive*
when it contains 0 (an interval that ends exactly at 0 does not exclude it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["reproduced", "contradicted", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("reproduced", "contradicted", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """The mean paired difference and its two-sided confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> Interval:
    """The t-interval of the mean of ``differences`` (at least two, all finite)."""
    from scipy import stats

    d = [float(x) for x in differences]
    if len(d) < 2:
        raise ValueError(f"a confidence interval needs at least 2 paired differences, got {len(d)}")
    if not all(math.isfinite(x) for x in d):
        raise ValueError(f"paired differences must be finite, got {d}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(d)
    mean = math.fsum(d) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)


def verdict(low: float, high: float, direction: int) -> Verdict:
    """The verdict of the interval [low, high] on a claim that the effect has sign ``direction``."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1 (the claimed sign), got {direction}")
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"need a finite interval with low <= high, got [{low}, {high}]")
    if low > 0.0:
        return "reproduced" if direction == 1 else "contradicted"
    if high < 0.0:
        return "reproduced" if direction == -1 else "contradicted"
    return "inconclusive"
