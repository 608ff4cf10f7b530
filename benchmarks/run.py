"""`make bench`: run every benchmark, print one table, and write it at the top of benchmarks/results.md
(the `## ` sections below it, dated runs of single scripts and of the GPU scripts, are kept)."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import OUT, Row  # noqa: E402

MODULES = ["bench_foundation", "bench_prep_memory", "bench_train", "bench_generate", "bench_teacher", "bench_serve",
           "bench_threads", "bench_train_real", "bench_dpo_real", "bench_serve_real", "bench_eval_real", "bench_closed_loop"]


def machine() -> str:
    import torch

    return (f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def render(rows: list[Row]) -> str:
    lines = ["| benchmark | privtune | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.1f}x" if r.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        lines.append(f"| {r.benchmark} | {r.privtune} | {r.baseline} | {ratio} | {r.target} | {met} |")
    notes = [f"- {r.benchmark}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def main() -> None:
    import torch

    torch.set_num_threads(1)  # a busy 2-core box: one thread each (STACK.md); GPU scripts set their own
    only = sys.argv[1:]
    OUT.mkdir(exist_ok=True)
    rows: list[Row] = []
    for name in MODULES:
        if only and name not in only:
            continue
        module = __import__(name)
        rows += module.rows()
        print(f"{name} done; the table so far:\n{render(rows)}\n", file=sys.stderr, flush=True)
    table = render(rows)
    print(table)
    if only:
        return  # a partial run does not replace the full table in results.md
    stamp = time.strftime("%Y-%m-%d %H:%M")
    results = Path(__file__).parent / "results.md"
    text = f"# privtune benchmarks\n\nFull `make bench` run {stamp} on {machine()}.\n\n{table}\n"
    kept = results.read_text(encoding="utf-8") if results.is_file() else ""
    sections = kept[kept.index("\n## ") + 1:] if "\n## " in kept else ""  # dated single-script and GPU runs
    results.write_text(text + ("\n" + sections if sections else ""), encoding="utf-8")


if __name__ == "__main__":
    main()
