"""Alpaca's near-duplicate rule, exactly, without comparing every pair.

Alpaca rejects a new instruction whose ROUGE-L F-measure (rouge_score, no stemming) with any seed
or already-kept instruction is above 0.7, by scoring it against all of them: O(n^2). Here:

- ROUGE-L F = 2*LCS/(m+n), and LCS never exceeds the multiset overlap of the two token lists. F > t
  needs n > t*m/(2-t) and an overlap above t*m/(2-t) =: k-1 tokens of the candidate's m.
- If two lists share at least k tokens, one of the candidate's first m-k+1 tokens (in any fixed
  order; rarest first keeps posting lists short) occurs in the other. So an inverted index probed
  with that prefix finds every possible match; common words are never probed.
- The few pairs found get the overlap bound, then the real LCS, and the decision is made with
  rouge_score's own arithmetic (precision, recall, then F), so the keep/reject decisions are the
  same as the brute force's.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_VALID = re.compile(r"^[a-z0-9]+$")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming: lowercase alphanumeric runs."""
    return [t for t in re.split(r"\s+", _NON_ALPHANUM.sub(" ", text.lower())) if _VALID.match(t)]


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, one row at a time."""
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


class NearDuplicateIndex:
    """Instructions kept so far; `is_near_duplicate` asks whether any scores above the threshold."""

    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold
        self.documents: list[tuple[list[str], Counter]] = []
        self.postings: dict[str, list[int]] = defaultdict(list)
        self.document_frequency: Counter = Counter()
        self.pairs_scored = 0

    def __len__(self) -> int:
        return len(self.documents)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        counts = Counter(tokens)
        index = len(self.documents)
        self.documents.append((tokens, counts))
        for token in counts:
            self.postings[token].append(index)
            self.document_frequency[token] += 1

    def _min_overlap(self, m: int) -> int:
        """Smallest overlap (in tokens) that could give F > threshold, with slack for rounding."""
        t = self.threshold
        return max(1, math.floor(t * m / (2 - t) - 1e-9) + 1) if t > 0 else 1

    def best_match(self, text: str) -> tuple[float, int | None]:
        """The highest ROUGE-L F above the threshold and which document, else (0.0, None)."""
        tokens = rouge_tokens(text)
        m = len(tokens)
        if m == 0:
            return 0.0, None
        counts = Counter(tokens)
        ordered = sorted(tokens, key=lambda tok: (self.document_frequency.get(tok, 0), tok))
        prefix = set(ordered[: m - self._min_overlap(m) + 1])
        candidates = set()
        for token in prefix:
            candidates.update(self.postings.get(token, ()))
        best, best_index = 0.0, None
        for index in candidates:
            other, other_counts = self.documents[index]
            n = len(other)
            overlap = sum(min(c, other_counts[tok]) for tok, c in counts.items() if tok in other_counts)
            if 2 * overlap / (m + n) <= self.threshold - 1e-9:
                continue
            self.pairs_scored += 1
            score = rouge_l_f(tokens, other)
            if score > self.threshold and score > best:
                best, best_index = score, index
        return best, best_index

    def is_near_duplicate(self, text: str) -> bool:
        return self.best_match(text)[1] is not None
