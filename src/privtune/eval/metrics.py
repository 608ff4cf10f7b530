"""Scores of a generated answer against its reference, and the `Metric` each answer metric module declares.

One module per metric in privtune/eval/answer_metrics/ (found by privtune.registry): the eval computes,
tabulates and plots whatever is there, so adding a metric is adding one file.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import Callable

from privtune import registry
from privtune.judging import parse_verdict, wilson_interval  # noqa: F401 (eval's names for them)

ANSWER_METRICS = "privtune.eval.answer_metrics"


@dataclass(frozen=True)
class Metric:
    """An answer-vs-reference metric: either a mean of per-example scores or a corpus-level figure."""

    name: str
    order: int
    """Table position among the answer metrics (after loss and perplexity, before stopped_before_limit)."""
    description: str
    plot: bool = False
    """Drawn in the comparison chart, whose axis runs 0 to 1."""
    higher_is_better: bool = True
    per_example: Callable[[str, str], float | None] | None = None
    """(prediction, reference) -> score; None where the metric does not apply, and that example is left out."""
    corpus: Callable[[list[str], list[str]], tuple] | None = None
    """(predictions, references) -> (figure, stats.Statistic that recomputes it on a resample)."""

    def __post_init__(self):
        if (self.per_example is None) == (self.corpus is None):
            raise TypeError(f"metric {self.name}: give exactly one of per_example and corpus")


def answer_metrics() -> dict[str, Metric]:
    """Every answer metric, in table order."""
    return registry.entries(ANSWER_METRICS, "METRIC")


def normalize(text: str) -> str:
    """Lowercase, no punctuation, single spaces: SQuAD-style normalised match."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def json_fields(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def score(prediction: str, reference: str) -> dict:
    """Each per-example answer metric that applies (JSON field accuracy only when the reference is JSON)."""
    scores = {}
    for metric in answer_metrics().values():
        value = metric.per_example(prediction, reference) if metric.per_example else None
        if value is not None:
            scores[metric.name] = value
    return scores


def __getattr__(name: str):
    """BLEU's helpers moved into its metric module; their old import path keeps working."""
    if name in ("corpus_bleu", "bleu_statistic"):
        from privtune.eval.answer_metrics import bleu

        return getattr(bleu, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
