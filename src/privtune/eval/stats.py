"""Confidence intervals and paired tests over eval examples: can this eval tell a real difference?

A figure on 16 or 200 held-out examples moves when other examples are drawn. Percentile bootstrap
over examples (numpy, fixed seed) shows how much: each resample draws n examples with replacement and
recomputes the figure the way the eval computes it (a mean, a token-weighted loss, corpus BLEU).
Base and tuned are compared on the same resamples, so how hard each example is cancels out, and with
an exact sign test on the per-example differences (computed here: scipy is not a dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass
class Statistic:
    """One eval figure, recomputable on any resample of the examples."""

    compute: Callable[[np.ndarray], np.ndarray]
    """(resamples, n) example indices -> the figure on each resample (NaN where undefined)."""
    per_example: np.ndarray | None = None
    """Each example's own value for the sign test (NaN: not scored); None for corpus-level figures."""
    higher_is_better: bool = True


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices drawn with replacement; reusing them for two models pairs the resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def ratio(numerators, denominators) -> Statistic:
    """sum(numerators) / sum(denominators) over the examples drawn.

    A token-weighted mean loss is a ratio: resampling examples (not tokens) keeps each example's
    tokens together, as they are correlated. A plain mean is the ratio with denominators of 1, and a
    score only some examples have (JSON fields) has denominator 0 on the others.
    """
    num, den = np.asarray(numerators, float), np.asarray(denominators, float)

    def compute(indices: np.ndarray) -> np.ndarray:
        total, count = num[indices].sum(axis=-1), den[indices].sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)

    with np.errstate(divide="ignore", invalid="ignore"):
        per_example = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return Statistic(compute, per_example)


def mean_of(values: list[float | None]) -> Statistic:
    """The mean over the examples that have a value."""
    present = [v is not None for v in values]
    return ratio([v if v is not None else 0.0 for v in values], [float(p) for p in present])


def percentile_interval(samples: np.ndarray) -> tuple[float, float] | None:
    """The central 95% of the bootstrap figures (undefined resamples left out); None if none is defined."""
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def interval(statistic: Statistic, indices: np.ndarray) -> tuple[float, float] | None:
    return percentile_interval(statistic.compute(indices))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: ties dropped, wins ~ Binomial(wins + losses, 1/2) if neither is better.

    Exact integer arithmetic, so small samples get exact p-values (e.g. 8 wins, 0 losses: 2/256).
    """
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def signs(tuned: np.ndarray, baseline: np.ndarray, higher_is_better: bool) -> tuple[int, int, int]:
    """Wins, losses and ties of tuned against baseline on the examples both have a value for."""
    both = np.isfinite(tuned) & np.isfinite(baseline)
    diff = (tuned - baseline)[both] * (1 if higher_is_better else -1)
    tie = np.isclose(diff, 0.0, rtol=0.0, atol=1e-12)  # identical models must tie despite float noise
    return int(((diff > 0) & ~tie).sum()), int(((diff < 0) & ~tie).sum()), int(tie.sum())


def paired(tuned: Statistic, baseline: Statistic, indices: np.ndarray) -> dict:
    """Tuned minus baseline: the difference with its bootstrap CI on shared resamples, and the sign test.

    Significant at 0.05 means the sign test's p < 0.05; for corpus-level figures (BLEU) there is no
    per-example sign, and the paired bootstrap CI excluding 0 decides instead.
    """
    full = np.arange(indices.shape[1])[None, :]
    difference = float((tuned.compute(full) - baseline.compute(full))[0])
    ci = percentile_interval(tuned.compute(indices) - baseline.compute(indices))
    result = {"difference": difference if math.isfinite(difference) else None, "ci": list(ci) if ci else None,
              "higher_is_better": tuned.higher_is_better}
    if tuned.per_example is not None and baseline.per_example is not None:
        wins, losses, ties = signs(tuned.per_example, baseline.per_example, tuned.higher_is_better)
        p_value = sign_test(wins, losses)
        result.update(test="sign test", p_value=p_value, wins=wins, losses=losses, ties=ties,
                      n=wins + losses + ties, significant=p_value < ALPHA)
        tuned_ahead = wins > losses
    else:
        result.update(test="paired bootstrap", p_value=None, n=int(indices.shape[1]),
                      significant=bool(ci and (ci[0] > 0 or ci[1] < 0)))
        tuned_ahead = (difference > 0) == tuned.higher_is_better
    result["better"] = ("tuned" if tuned_ahead else "baseline") if result["significant"] else None
    return result
