"""Alpaca's near-duplicate rule, exactly, without comparing every pair.

Alpaca rejects a new instruction whose ROUGE-L F-measure (rouge_score, no stemming) with any seed
or already-kept instruction is above 0.7, by scoring it against all of them: O(n^2). Here:

- ROUGE-L F = 2*LCS/(m+n), and LCS never exceeds the multiset overlap of the two token lists. F > t
  needs n > t*m/(2-t) and an overlap above t*m/(2-t) =: k-1 tokens of the candidate's m.
- Both lists need that overlap (by symmetry, k(n) for the other), and with both sorted in one
  fixed global order, two lists sharing at least k tokens share one within their first len-k+1
  (prefix filtering, as in set-similarity joins). So each kept instruction is indexed by its
  prefix only and each candidate probes with its prefix only; with rare tokens first (ranked by
  their frequency in the seeds, fixed for the whole run so resumes see the same order), common
  words are never indexed or probed.
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


def occurrences(tokens: list[str]) -> frozenset:
    """A multiset as a set of (token, k-th occurrence): set intersection then counts min(c_a, c_b)."""
    seen: Counter = Counter()
    labelled = []
    for token in tokens:
        seen[token] += 1
        labelled.append((token, seen[token]))
    return frozenset(labelled)


class NearDuplicateIndex:
    """Instructions kept so far; `is_near_duplicate` asks whether any scores above the threshold."""

    def __init__(self, threshold: float = 0.7, order_hint: list[str] | None = None):
        self.threshold = threshold
        self.documents: list[tuple[list[str], frozenset]] = []
        self.postings: dict[str, list[int]] = defaultdict(list)
        self.hint_frequency = Counter(t for text in order_hint or [] for t in set(rouge_tokens(text)))
        self.pairs_scored = 0

    def __len__(self) -> int:
        return len(self.documents)

    def _prefix(self, tokens: list[str]) -> set[str]:
        """The tokens that must be shared with any match: the rarest len - k + 1 of them."""
        ordered = sorted(tokens, key=lambda tok: (self.hint_frequency.get(tok, 0), tok))
        return set(ordered[: len(tokens) - self._min_overlap(len(tokens)) + 1])

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        index = len(self.documents)
        self.documents.append((tokens, occurrences(tokens)))
        if tokens:
            for token in self._prefix(tokens):
                self.postings[token].append(index)

    def _min_overlap(self, m: int) -> int:
        """Smallest overlap (in tokens) that could give F > threshold, with slack for rounding."""
        t = self.threshold
        return max(1, math.floor(t * m / (2 - t) - 1e-9) + 1)

    def best_match(self, text: str) -> tuple[float, int | None]:
        """The highest ROUGE-L F above the threshold and which document, else (0.0, None)."""
        tokens = rouge_tokens(text)
        m = len(tokens)
        if m == 0:
            return 0.0, None
        mine = occurrences(tokens)
        candidates = set()
        for token in self._prefix(tokens):
            candidates.update(self.postings.get(token, ()))
        shortest, longest = self.threshold * m / (2 - self.threshold), m * (2 - self.threshold) / self.threshold
        best, best_index = 0.0, None
        for index in candidates:
            other, other_occurrences = self.documents[index]
            n = len(other)
            if not shortest - 1e-9 < n < longest + 1e-9:
                continue
            overlap = len(mine & other_occurrences)  # the multiset overlap, at set speed
            if 2 * overlap / (m + n) <= self.threshold - 1e-9:
                continue
            self.pairs_scored += 1
            score = rouge_l_f(tokens, other)
            if score > self.threshold and score > best:
                best, best_index = score, index
        return best, best_index

    def is_near_duplicate(self, text: str) -> bool:
        return self.best_match(text)[1] is not None
