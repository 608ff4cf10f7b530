"""Alpaca's near-duplicate rule, exactly, without comparing every pair.

Alpaca rejects a new instruction whose ROUGE-L F-measure (rouge_score, no stemming) with any seed
or already-kept instruction is above 0.7, by scoring it against all of them: O(n^2). Here:

- ROUGE-L F = 2*LCS/(m+n), and LCS never exceeds the multiset overlap of the two token lists. F > t
  needs n > t*m/(2-t) and an overlap above t*m/(2-t) =: k-1 tokens of the candidate's m.
- Both lists need that overlap (by symmetry, k(n) for the other), and with both sorted in one
  fixed global order, two lists sharing at least k tokens share one within their first len-k+1
  (prefix filtering, as in set-similarity joins), and two within their first len-k+2 (SHARED).
  So each kept instruction is indexed by its prefix only and each candidate probes with its
  prefix only; with rare tokens first (ranked by
  their frequency in the seeds, fixed for the whole run so resumes see the same order), common
  words are never indexed or probed.
- The candidates found get the length filter and the exact multiset-overlap bound all at once
  (numpy over a flat array of every kept instruction's tokens: the per-candidate Python loop was
  the cost, as candidates per query grow with the stream), then the few left get the real LCS
  (bit-parallel), likeliest first, stopping at the first above the threshold when rejecting,
  and the decision is made with rouge_score's own arithmetic (precision, recall, then F), so the
  keep/reject decisions are the same as the brute force's.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from privtune.rouge import rouge_l_f, rouge_tokens

SHARED = 2
"""Prefixes are extended so that a match shares this many prefix elements, not just one: the
first SHARED common elements of two lists with overlap >= k both lie within each one's first
len - k + SHARED elements. Instructions sharing one rare word are then not even candidates."""
def occurrences(tokens: list[str]) -> list[tuple[str, int]]:
    """A multiset as a set of (token, k-th occurrence): shared elements then count min(c_a, c_b)."""
    seen: Counter = Counter()
    labelled = []
    for token in tokens:
        seen[token] += 1
        labelled.append((token, seen[token]))
    return labelled


class GrowingArray:
    """An int32 array appended to in amortised O(1); `view` is what has been written."""

    def __init__(self, capacity: int = 8):
        self.data = np.empty(capacity, dtype=np.int32)
        self.size = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=np.int32)
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), dtype=np.int32)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size: end] = values
        self.size = end

    def append(self, value: int) -> None:
        if self.size == len(self.data):
            self.data = np.concatenate([self.data, np.empty(len(self.data), dtype=np.int32)])
        self.data[self.size] = value
        self.size += 1

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


class NearDuplicateIndex:
    """Instructions kept so far; `is_near_duplicate` asks whether any scores above the threshold."""

    def __init__(self, threshold: float = 0.7, order_hint: list[str] | None = None):
        self.threshold = threshold
        self.tokens: list[list[str]] = []
        self.element_ids: dict[tuple[str, int], int] = {}
        self.flat = GrowingArray(1024)             # every kept instruction's element ids, one after another
        self.starts = GrowingArray(256)            # where each instruction's elements begin in `flat`
        self.lengths = GrowingArray(256)
        self.postings: dict[int, GrowingArray] = {}  # element id -> instructions with it in their prefix
        self.in_query = np.zeros(1024, dtype=np.int32)
        self.hint_frequency = Counter(t for text in order_hint or [] for t in set(rouge_tokens(text)))
        self.pairs_scored = 0
        self._last = None

    def __len__(self) -> int:
        return len(self.tokens)

    def _min_overlap(self, m: int) -> int:
        """Smallest overlap (in tokens) that could give F > threshold, with slack for rounding."""
        t = self.threshold
        return max(1, math.floor(t * m / (2 - t) - 1e-9) + 1)

    def _prefix(self, labelled: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The rarest len - k + SHARED elements: any match shares min(SHARED, k) of them."""
        frequency = self.hint_frequency
        ordered = sorted((frequency.get(token, 0), token, k) for token, k in labelled)
        return [(token, k) for _, token, k in ordered[: len(labelled) - self._min_overlap(len(labelled)) + SHARED]]

    def _analyse(self, text: str) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]:
        """Tokens, labelled elements and prefix; the last one is kept, as `add` follows its query."""
        if self._last is not None and self._last[0] == text:
            return self._last[1]
        tokens = rouge_tokens(text)
        labelled = occurrences(tokens)
        self._last = (text, (tokens, labelled, self._prefix(labelled)))
        return self._last[1]

    def add(self, text: str) -> None:
        tokens, labelled, prefix = self._analyse(text)
        index = len(self.tokens)
        self.tokens.append(tokens)
        ids = [self.element_ids.setdefault(e, len(self.element_ids)) for e in labelled]
        self.starts.append(self.flat.size)
        self.lengths.append(len(ids))
        self.flat.extend(ids)
        if len(self.element_ids) > len(self.in_query):
            grown = max(len(self.element_ids), 2 * len(self.in_query))
            self.in_query = np.concatenate([self.in_query, np.zeros(grown - len(self.in_query), dtype=np.int32)])
        for element in prefix if tokens else ():
            self.postings.setdefault(self.element_ids[element], GrowingArray()).append(index)

    def best_match(self, text: str, first: bool = False) -> tuple[float, int | None]:
        """The highest ROUGE-L F above the threshold and which instruction, else (0.0, None);
        with `first`, the first one found above it (enough to reject)."""
        tokens, labelled, prefix = self._analyse(text)
        m = len(tokens)
        if m == 0 or not self.tokens:
            return 0.0, None
        probes = [self.postings[i].view for i in (self.element_ids.get(e) for e in prefix)
                  if i is not None and i in self.postings]
        if not probes:
            return 0.0, None
        shared = np.bincount(np.concatenate(probes), minlength=len(self.tokens))
        candidates = np.flatnonzero(shared >= min(SHARED, self._min_overlap(m)))
        t = self.threshold
        lengths = self.lengths.view[candidates]
        fits = (lengths > t * m / (2 - t) - 1e-9) & (lengths < m * (2 - t) / t + 1e-9)
        candidates, lengths = candidates[fits], lengths[fits]
        if not len(candidates):
            return 0.0, None
        known = [i for i in (self.element_ids.get(e) for e in labelled) if i is not None]
        self.in_query[known] = 1
        try:  # the multiset overlap of the query with every candidate at once
            ends = np.cumsum(lengths)
            positions = np.repeat(self.starts.view[candidates] - (ends - lengths), lengths) + np.arange(ends[-1])
            overlap = np.add.reduceat(self.in_query[self.flat.view[positions]], ends - lengths)
        finally:
            self.in_query[known] = 0
        bound = 2 * overlap / (m + lengths)
        possible = bound > t - 1e-9
        best, best_index = 0.0, None
        for index in candidates[possible][np.argsort(-bound[possible], kind="stable")].tolist():  # likeliest first
            self.pairs_scored += 1
            score = rouge_l_f(tokens, self.tokens[index])
            if score > t and score > best:
                best, best_index = score, index
                if first:
                    break
        return best, best_index

    def is_near_duplicate(self, text: str) -> bool:
        return self.best_match(text, first=True)[1] is not None
