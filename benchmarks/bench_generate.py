"""Generate rows: the near-duplicate filter against rouge_score brute force (Alpaca's way)."""

from __future__ import annotations

import json
import random
import time

from common import SHARED_SEEDS, Row

BRUTE = 1_500     # brute force is O(n^2) at ~50 us a pair: measured on this many, projected beyond
INDEXED = 4_000
STREAM = 70_000


def instructions(count: int, seed: int) -> tuple[list[str], str]:
    """Instructions recombined from the seed tasks (halves spliced, words swapped), or synthetic."""
    rng = random.Random(seed)
    if SHARED_SEEDS.is_file():
        base = [json.loads(l)["instruction"] for l in SHARED_SEEDS.read_text().splitlines() if l.strip()]
        origin = "recombined from the 175 Alpaca seed instructions"
    else:
        words = "write explain list give describe a the short poem story email about why how three tips for".split()
        base = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(175)]
        origin = "synthetic (../shared not present)"
    vocabulary = sorted({w for text in base for w in text.split()})
    out = []
    for _ in range(count):
        a, b = rng.sample(base, 2)
        wa, wb = a.split(), b.split()
        words = wa[: rng.randint(1, len(wa))] + wb[rng.randint(0, len(wb) - 1):]
        for _ in range(rng.randint(0, 3)):
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        out.append(" ".join(words))
    return out, origin


def brute_force(stream: list[str], threshold: float = 0.7) -> list[bool]:
    """Alpaca's filter: score each new instruction against every kept one with rouge_score."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept, decisions = [], []
    for text in stream:
        tokens = scorer._tokenizer.tokenize(text)
        keep = all(rouge_scorer._score_lcs(tokens, old).fmeasure <= threshold for old in kept)
        decisions.append(keep)
        if keep:
            kept.append(tokens)
    return decisions


def indexed(stream: list[str], threshold: float = 0.7, hint: list[str] | None = None) -> list[bool]:
    from privtune.generate.neardup import NearDuplicateIndex

    index, decisions = NearDuplicateIndex(threshold, order_hint=hint), []
    for text in stream:
        keep = not index.is_near_duplicate(text)
        decisions.append(keep)
        if keep:
            index.add(text)
    return decisions


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def rows() -> list[Row]:
    stream, origin = instructions(STREAM, seed=5)
    hint = stream[:175]  # generate ranks tokens by their frequency in the seeds; here, the first 175
    brute, brute_s = _timed(brute_force, stream[:BRUTE])
    ours, ours_s = _timed(indexed, stream[:BRUTE], 0.7, hint)
    identical = brute == ours
    ours_4k, ours_4k_s = _timed(indexed, stream[:INDEXED], 0.7, hint)
    identical = identical and ours_4k[:BRUTE] == brute
    kept_4k = sum(ours_4k)
    # brute force cost grows with candidates x kept: project it from the measured per-pair time
    pairs = lambda decisions: sum(sum(decisions[:i]) for i in range(len(decisions)))
    per_pair = brute_s / max(1, pairs(brute))
    projected_4k = per_pair * pairs(ours_4k)
    stream_decisions, stream_s = _timed(indexed, stream, 0.7, hint)
    return [
        Row(f"near-dup filter, {BRUTE:,} instructions (measured both)", f"{ours_s:.2f} s", f"{brute_s:.1f} s (rouge_score, all pairs)",
            brute_s / ours_s, "identical decisions", identical,
            f"{origin}; keep/reject decisions identical on {BRUTE:,} (asserted) and on the first {BRUTE:,} of the "
            f"4,000 run; {per_pair * 1e6:.0f} us a pair for rouge_score"),
        Row(f"near-dup filter, {INDEXED:,} instructions", f"{ours_4k_s:.2f} s", f"{projected_4k:.0f} s (projected: "
            f"{pairs(ours_4k):,} pairs x measured per-pair time)", projected_4k / ours_4k_s, ">= 500x",
            projected_4k / ours_4k_s >= 500 and identical, f"{kept_4k:,} kept of {INDEXED:,}"),
        Row(f"near-dup filter, {STREAM:,}-candidate stream", f"{stream_s:.1f} s", "-", None,
            "70,000 in <= 30 s", stream_s <= 30,
            f"{sum(stream_decisions):,} kept; brute force not run (projected "
            f"{per_pair * pairs(stream_decisions) / 3600:.0f} h at the measured per-pair time)"),
    ]
