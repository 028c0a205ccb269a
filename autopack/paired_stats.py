"""Paired statistics for ab-test: a seeded bootstrap of the mean, the sign test and Wilcoxon.

- a paired bootstrap 95 % interval of the mean over ``resamples`` resamples of the pairs,
  drawn from ``random.Random(seed)`` (see ``Bootstrap.draws``; the same draws for every
  metric, so a rerun with the same seed gives the same intervals); percentiles by linear
  interpolation between order statistics;
- the exact two-sided sign test (zero deltas dropped) and the Wilcoxon signed-rank test
  (zero deltas dropped, average ranks for ties). Its p-value is exact, conditional on the
  ties, for up to 25 non-zero deltas; beyond that it uses the normal approximation with the
  tie-corrected variance and no continuity correction.
"""

from __future__ import annotations

import math
import operator
import random
from collections import Counter
from typing import Callable, Sequence

DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 10_000
EXACT_WILCOXON_MAX_N = 25


class Bootstrap:
    """Seeded paired-bootstrap intervals of the mean; the same resamples serve every metric."""

    def __init__(self, seed: int, resamples: int):
        self.seed, self.resamples = seed, resamples
        self._takers: dict[int, list[Callable]] = {}

    def draws(self, n: int) -> list[Sequence[int]]:
        """``resamples`` sequences of n indices in [0, n), from ``Random(seed).randbytes``.

        Up to 256 pairs, each index is one random byte, bytes >= n rejected (unbiased, and the
        rejection runs in C: about five times faster). Beyond, each index maps a 32-bit word by
        multiply-shift (bias below n / 2**32).
        """
        rng, total = random.Random(self.seed), n * self.resamples
        if n <= 256:
            rejected, kept = bytes(range(n, 256)), bytearray()
            while len(kept) < total:
                kept += rng.randbytes((total - len(kept)) * 256 // n + 64).translate(None, rejected)
            indices: Sequence[int] = bytes(kept[:total])
        else:
            indices = [(word * n) >> 32 for word in memoryview(rng.randbytes(4 * total)).cast("I")]
        return [indices[start:start + n] for start in range(0, total, n)]

    def mean_ci(self, deltas: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
        return self.mean_cis([deltas], level)[0]

    def mean_cis(self, columns: Sequence[Sequence[float]],
                 level: float = 0.95) -> list[tuple[float, float] | None]:
        """One interval per column (the deltas of one metric over the same n pairs; None if n < 2).

        The columns are resampled together: each is scaled to integers (deltas carry at most 9
        decimals), shifted to start at 0 and given its own bit field in one Python int per pair,
        so one sum of a resample's packed ints is, exactly, the sum of every column at once.
        """
        n = len(columns[0]) if columns else 0
        if n < 2:
            return [None] * len(columns)
        results: list[tuple[float, float] | None] = [(c[0], c[0]) for c in columns]  # right when constant
        packed, fields, shift = [0] * n, [], 0
        for index, column in enumerate(columns):
            if min(column) == max(column):
                continue
            scale = 1 if all(isinstance(d, int) for d in column) else 10 ** 9
            scaled = [round(d * scale) for d in column]
            low = min(scaled)
            width = (n * (max(scaled) - low)).bit_length() + 1  # no carry out of a field
            for j, value in enumerate(scaled):
                packed[j] += (value - low) << shift
            fields.append((index, scale, low, shift, (1 << width) - 1))
            shift += width
        if fields:
            if n not in self._takers:
                self._takers[n] = [operator.itemgetter(*draw) for draw in self.draws(n)]
            sums = [sum(take(packed)) for take in self._takers[n]]
            tail = (1 - level) / 2
            for index, scale, low, shift, mask in fields:
                ordered = sorted((total >> shift) & mask for total in sums)
                results[index] = tuple((_percentile(ordered, q) + n * low) / (scale * n) for q in (tail, 1 - tail))
        return results


def bootstrap_mean_ci(deltas: Sequence[float], seed: int = DEFAULT_SEED,
                      resamples: int = DEFAULT_RESAMPLES) -> tuple[float, float] | None:
    """95 % paired-bootstrap interval of the mean delta (None for fewer than 2 deltas)."""
    return Bootstrap(seed, resamples).mean_ci(deltas)


def _percentile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def sign_test_p(deltas: Sequence[float]) -> float:
    """Exact two-sided sign test; zero deltas are dropped."""
    positive, negative = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
    n = positive + negative
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(positive, negative) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def wilcoxon_p(deltas: Sequence[float]) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value and the method used (exact | normal)."""
    nonzero = [d for d in deltas if d != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0, "exact"
    ranks = _average_ranks([abs(d) for d in nonzero])
    w_plus = sum(r for r, d in zip(ranks, nonzero) if d > 0)
    if n <= EXACT_WILCOXON_MAX_N:
        doubled = [round(2 * r) for r in ranks]  # average ranks are multiples of 1/2
        ways = [1] + [0] * sum(doubled)  # ways[s]: sign assignments with 2 * W+ == s
        for rank in doubled:
            for s in range(len(ways) - 1, rank - 1, -1):
                ways[s] += ways[s - rank]
        w = round(2 * w_plus)
        lower, upper = sum(ways[:w + 1]), sum(ways[w:])
        return min(1.0, 2 * min(lower, upper) / 2 ** n), "exact"
    ties = Counter(ranks).values()
    variance = n * (n + 1) * (2 * n + 1) / 24 - sum(t ** 3 - t for t in ties) / 48
    if variance <= 0:
        return 1.0, "normal"
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(variance)
    return min(1.0, math.erfc(abs(z) / math.sqrt(2))), "normal"
