"""Scores of a generated answer against its reference."""

from __future__ import annotations

import json
import re
import string

from privtune.rouge import rouge_l_f, rouge_tokens


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
    """ROUGE-L F, exact and normalised match, and JSON field accuracy when the reference is JSON."""
    scores = {
        "rouge_l": rouge_l_f(rouge_tokens(prediction), rouge_tokens(reference)),
        "exact_match": float(prediction.strip() == reference.strip()),
        "normalized_match": float(normalize(prediction) == normalize(reference)),
    }
    expected = json_fields(reference)
    if expected:
        got = json_fields(prediction) or {}
        scores["json_field_accuracy"] = sum(got.get(k) == v for k, v in expected.items()) / len(expected)
    return scores


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score


def bleu_statistic(predictions: list[str], references: list[str]):
    """Corpus BLEU on any resample of the examples, from each sentence's n-gram counts.

    BLEU is not a mean of sentence scores, so a resample must recompute it from the summed counts;
    extracting the counts once (as sacrebleu's own bootstrap does) makes 1000 resamples cheap.
    """
    import numpy as np
    from sacrebleu.metrics import BLEU

    from privtune.eval.stats import Statistic

    bleu = BLEU()
    counts = np.array(bleu._extract_corpus_statistics(predictions, [references]), dtype=np.int64)

    def compute(indices: np.ndarray) -> np.ndarray:
        return np.array([bleu._compute_score_from_stats(list(counts[row].sum(axis=0))).score for row in indices])

    return Statistic(compute)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def wilson_interval(wins: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a win rate (ties count half)."""
    if total == 0:
        return 0.0, 1.0
    p = wins / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


_VERDICT = re.compile(r"\b(?:winner|verdict|answer)\s*[:=]\s*\**\s*(A|B|tie)\b", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from a judge's reply; None when it does not say in the expected form."""
    match = _VERDICT.search(text or "")
    if match:
        value = match.group(1)
        return "tie" if value.lower() == "tie" else value.upper()
    stripped = (text or "").strip().strip(".*").upper()
    return {"A": "A", "B": "B", "TIE": "tie"}.get(stripped)
