"""Prep's peak memory against input size: streaming prep vs the whole-file prep it replaced.

Each run is `privtune prep` in its own process; a sampler adds up the proportional set size (PSS:
shared pages split between the processes that share them) of that process and its tokenizing
workers every 50 ms, so forked workers are not counted twice.
The baseline is the last revision that read everything into memory, checked out into a temporary
git worktree and run on the same file in the same script. Usage:

    python benchmarks/bench_prep_memory.py [SIZE_MB ...]     # default: 100 1000
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT, Row, tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WHOLE_FILE_REVISION = "4500559"  # prep before streaming
WORDS = ("ticket order refund invoice login password crash screen export plan charge team billing "
         "account upgrade cancel delivery address receipt shipping warranty").split()


def write_records(path: Path, megabytes: int, seed: int = 0) -> int:
    """Alpaca-shaped records of ~1 KB each until the file reaches `megabytes`; returns the count."""
    rng = random.Random(seed)
    target, count = megabytes * 1_000_000, 0
    with open(path, "w", encoding="utf-8") as handle:
        while handle.tell() < target:
            text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))
            handle.write(json.dumps({"instruction": f"Ticket {count}: {text(rng.randint(5, 30))}",
                                     "input": text(rng.randint(0, 60)), "output": text(rng.randint(20, 160))}) + "\n")
            count += 1
    return count


def peak_memory(command: list[str], env: dict) -> tuple[float, float, str]:
    """(peak PSS in MB of the process tree, wall seconds, last output line) of one command."""
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    peak = 0
    root = psutil.Process(process.pid)

    def sample():
        nonlocal peak
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_full_info().pss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    sampler.join()
    last = (out.strip().splitlines() or [""])[-1]
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {out[-2000:]}")
    return peak / 2**20, time.perf_counter() - start, last


def baseline_tree(tmp: Path) -> Path | None:
    """The whole-file revision's source in a temporary worktree, or None outside a git checkout."""
    folder = tmp / "whole-file"
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder),
                           WHOLE_FILE_REVISION], capture_output=True, text=True)
    return folder / "src" if done.returncode == 0 else None


def measure(sizes_mb: list[int], baseline_up_to_mb: int = 200) -> list[Row]:
    model = tiny_model()
    rows = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        tmp = Path(tmp)
        old_src = baseline_tree(tmp)
        try:
            for size in sizes_mb:
                data = tmp / f"records-{size}mb.jsonl"
                count = write_records(data, size)
                args = ["-m", "privtune", "prep", "--data", str(data), "--model", str(model),
                        "--set", "max_length=4096"]
                ours_mb, ours_s, _ = peak_memory([sys.executable, *args, "--workspace", str(tmp / "new")], env)
                baseline, ratio = "-", None
                if old_src is not None and size <= baseline_up_to_mb:
                    old_env = {**env, "PYTHONPATH": str(old_src)}
                    old_mb, old_s, _ = peak_memory([sys.executable, *args, "--workspace", str(tmp / "old")], old_env)
                    baseline, ratio = f"{old_mb:,.0f} MB in {old_s:.0f} s (whole-file prep, {WHOLE_FILE_REVISION})", \
                        old_mb / ours_mb
                rows.append(Row(f"prep peak memory, {data.stat().st_size / 1e6:,.0f} MB JSONL ({count:,} records)",
                                f"{ours_mb:,.0f} MB in {ours_s:.0f} s", baseline, ratio,
                                "bounded: flat in input size", None,
                                "PSS of prep and its workers summed, sampled every 50 ms; "
                                f"tiny model's tokenizer; {os.cpu_count()} cores; dedup on"))
                data.unlink()
        finally:
            if old_src is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_src.parent)],
                               capture_output=True)
    return rows


def rows() -> list[Row]:
    return measure([100, 1000])


if __name__ == "__main__":
    from run import render

    OUT.mkdir(exist_ok=True)
    print(render(measure([int(s) for s in sys.argv[1:]] or [100, 1000])))
