"""Shared pieces of the benchmarks: result rows, the tiny model, Alpaca-like records."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

SHARED_SEEDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_seed_tasks.jsonl"
OUT = Path(__file__).resolve().parents[1] / "bench-out"


@dataclass
class Row:
    """One line of the table: what privtune did against what baseline, and the target."""

    benchmark: str
    privtune: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def tiny_model() -> Path:
    """The offline base model, built once into bench-out/."""
    from privtune.models.tiny import build_tiny_model

    path = OUT / "tiny-model"
    if not (path / "config.json").is_file():
        root = Path(__file__).resolve().parents[1]
        build_tiny_model(path, [root / "data" / "tickets.jsonl", root / "data" / "seeds.jsonl"])
    return path


def alpaca_like_records(count: int, seed: int = 0) -> tuple[list[dict], str]:
    """Alpaca-shaped records recombined from the 175 seed tasks when ../shared has them, else synthetic."""
    rng = random.Random(seed)
    if SHARED_SEEDS.is_file():
        tasks = [json.loads(line) for line in SHARED_SEEDS.read_text().splitlines() if line.strip()]
        instances = [i for t in tasks for i in t["instances"]]
        records = []
        for n in range(count):
            task, instance = rng.choice(tasks), rng.choice(instances)
            records.append({"instruction": f"{task['instruction']} (variant {n})", "input": instance["input"],
                            "output": instance["output"]})
        return records, "recombined from the 175 Alpaca seed tasks"
    words = "ticket order refund invoice login password crash screen export plan charge team".split()
    lengths = lambda lo, hi: " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))
    return ([{"instruction": f"Task {n}: {lengths(4, 20)}", "input": lengths(0, 30) if rng.random() < 0.4 else "",
              "output": lengths(2, 120)} for n in range(count)], "synthetic (../shared not present)")
