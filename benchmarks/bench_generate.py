"""Generate rows: the near-duplicate filter against rouge_score brute force (Alpaca's way).

On two kinds of data, both made here from nothing outside the project: self-similar instructions
(what a teacher imitating seed tasks writes) and diverse prompts (what real users write)."""

from __future__ import annotations

import ast
import hashlib
import platform
import random
import re
import sysconfig
import time
from pathlib import Path

from common import Row, self_instruct_instructions

BRUTE = 1_500     # brute force is O(n^2), 27-52 us a pair here: measured on this many, projected beyond
INDEXED = 4_000
STREAM = 70_000
DIVERSE = 2_000   # measured both: most are kept, so brute force scores ~2 million pairs

# Pure-Python standard-library modules present in Python 3.11 and later, core (not split out by
# distributions, as tkinter or idlelib may be). Their docstrings are read from source, not imported.
STDLIB = ("argparse ast base64 bdb bisect calendar cmd code codecs collections colorsys configparser contextlib "
          "copy csv dataclasses datetime difflib dis doctest enum filecmp fileinput fnmatch fractions ftplib "
          "functools getopt gettext glob gzip heapq hmac imaplib inspect ipaddress json locale logging mailbox "
          "mimetypes netrc numbers operator optparse os pathlib pdb pickle pkgutil platform plistlib poplib "
          "pprint profile pstats pydoc queue random re reprlib sched secrets selectors shelve shlex shutil "
          "smtplib socket socketserver statistics string subprocess symtable tarfile tempfile textwrap "
          "threading timeit tokenize trace traceback types typing uuid warnings wave weakref webbrowser zipapp "
          "zipfile _pydecimal").split()


def instructions(count: int, seed: int) -> tuple[list[str], str]:
    """Self-instruct-like: 175 generated "seed" instructions, then recombined (halves spliced, words
    swapped) as an LLM imitating its seeds would, so many candidates are near-duplicates."""
    rng = random.Random(seed)
    base = [text for text, _, _ in self_instruct_instructions(175, rng)]
    vocabulary = sorted({w for text in base for w in text.split()})
    out = []
    for _ in range(count):
        a, b = rng.sample(base, 2)
        wa, wb = a.split(), b.split()
        words = wa[: rng.randint(1, len(wa))] + wb[rng.randint(0, len(wb) - 1):]
        for _ in range(rng.randint(0, 3)):
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        out.append(" ".join(words))
    digest = hashlib.sha256("\n".join(out).encode()).hexdigest()[:12]
    return out, (f"synthetic self-instruct-like instructions (benchmarks/common.py templates, seed {seed}, sha256 "
                 f"{digest}): 175 generated, then recombined (halves spliced, words swapped)")


def diverse_prompts(count: int, seed: int) -> tuple[list[str], str]:
    """Prompts that are not self-similar, as real users' are: prose paragraphs (4-150 words, no
    doctests, mostly words) of the docstrings in the STDLIB modules' source, sorted, then sampled."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paragraphs = set()
    for name in STDLIB:
        path = root / f"{name}.py"
        tree = ast.parse((path if path.is_file() else root / name / "__init__.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for paragraph in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                    words = paragraph.split()
                    prose = sum(map(str.isalpha, words)) >= 0.6 * len(words)
                    if ">>>" not in paragraph and 4 <= len(words) <= 150 and prose:
                        paragraphs.add(" ".join(words))
    pool = sorted(paragraphs)
    prompts = random.Random(seed).sample(pool, count)
    digest = hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:12]
    return prompts, (f"{count:,} of {len(pool):,} prose paragraphs of docstrings in {len(STDLIB)} standard-library "
                     f"modules' source (bench_generate.STDLIB; Python {platform.python_version()}, seed {seed}, "
                     f"sha256 {digest}): the same set for a given Python version, another on another")


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
    prompts, prompts_origin = diverse_prompts(DIVERSE, seed=7)
    diverse_brute, diverse_brute_s = _timed(brute_force, prompts)
    diverse_ours, diverse_ours_s = _timed(indexed, prompts, 0.7, prompts[:175])
    diverse_identical = diverse_brute == diverse_ours
    return [
        Row(f"near-dup filter, {BRUTE:,} instructions (measured both)", f"{ours_s:.2f} s", f"{brute_s:.1f} s (rouge_score, all pairs)",
            brute_s / ours_s, "identical decisions", identical,
            f"{origin}; keep/reject decisions identical on {BRUTE:,} (the met column) and on the first {BRUTE:,} of the "
            f"4,000 run; {per_pair * 1e6:.0f} us a pair for rouge_score"),
        Row(f"near-dup filter, {INDEXED:,} instructions", f"{ours_4k_s:.2f} s", f"{projected_4k:.0f} s (projected: "
            f"{pairs(ours_4k):,} pairs x measured per-pair time)", projected_4k / ours_4k_s, ">= 500x",
            projected_4k / ours_4k_s >= 500 and identical, f"{kept_4k:,} kept of {INDEXED:,}"),
        Row(f"near-dup filter, {STREAM:,}-candidate stream", f"{stream_s:.1f} s", "-", None,
            "70,000 in <= 30 s", stream_s <= 30,
            f"{sum(stream_decisions):,} kept; brute force not run (projected "
            f"{per_pair * pairs(stream_decisions) / 3600:.0f} h at the measured per-pair time)"),
        Row(f"near-dup filter, {DIVERSE:,} diverse (non-self-similar) prompts (measured both)",
            f"{diverse_ours_s:.2f} s", f"{diverse_brute_s:.1f} s (rouge_score, all pairs)",
            diverse_brute_s / diverse_ours_s, "identical decisions", diverse_identical,
            f"{prompts_origin}; keep/reject decisions identical: {diverse_identical}; {sum(diverse_ours):,} kept; "
            f"{diverse_brute_s / max(1, pairs(diverse_brute)) * 1e6:.0f} us a pair for rouge_score; token order "
            f"hint: the first 175 prompts"),
    ]
