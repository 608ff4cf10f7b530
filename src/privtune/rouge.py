"""ROUGE-L exactly as rouge_score computes it (its tokenizer, no stemming, its F arithmetic), fast.

Shared by generate's near-duplicate filter and eval's metrics; owned by neither stage.
"""

from __future__ import annotations

import re

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming: lowercase ASCII alphanumeric runs.

    (It splits on whitespace and keeps the runs matching ^[a-z0-9]+$ after turning every other
    character into a space: the same as splitting what is left.)"""
    return _NON_ALPHANUM.sub(" ", text.lower()).split()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Crochemore et al. 2001).

    Bit i of `row` stands for a[i]; one big-integer add per token of b replaces a row of the
    dynamic-programming table; the LCS is the number of zero bits left.
    """
    if len(a) < len(b):
        a, b = b, a
    positions: dict[str, int] = {}
    for i, token in enumerate(b):
        positions[token] = positions.get(token, 0) | (1 << i)
    mask = (1 << len(b)) - 1
    row = mask
    for token in a:
        matches = row & positions.get(token, 0)
        row = ((row + matches) | (row - matches)) & mask
    return len(b) - bin(row).count("1")


def lcs_length_table(a: list[str], b: list[str]) -> int:
    """The textbook dynamic programme, one row at a time: the reference lcs_length is tested against."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_f(candidate: list[str], reference: list[str]) -> float:
    """ROUGE-L F-measure computed as rouge_score computes it."""
    if not candidate or not reference:
        return 0.0
    lcs = lcs_length(reference, candidate)
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
