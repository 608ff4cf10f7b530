"""Thread rows: LoRA training steps and batched greedy generation on the tiny model, by thread setting.

Settings: 1 thread; torch's default (what eval and serve used; train used `cpu_count // 2`, 1 on a
2-core box); privtune's choice (privtune.runtime: one thread per usable physical core) with
OpenMP's default spin-waiting; and the same with OMP_WAIT_POLICY=PASSIVE, as `privtune train`
sets it. The wait policy is read when torch is imported, so every measurement runs in a fresh
process, and the settings take turns so that a shared box's changing load falls on all of them.
Each figure is the median (min-max) of REPEATS processes; a process that runs past
WORKER_TIMEOUT_S counts as 0. Run it a few times and read the spread.

    .venv/bin/python benchmarks/bench_threads.py
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, Row, tiny_model

DATA = Path(__file__).resolve().parents[1] / "data"
REPEATS = 3
TRAIN_STEPS = 10
GEN_BATCH, GEN_TOKENS = 8, 48
WORKER_TIMEOUT_S = 150


def settings() -> dict[str, tuple[int, str | None]]:
    """label -> (threads, OMP_WAIT_POLICY); torch's default is read in a fresh process without privtune."""
    from privtune.runtime import choose_threads

    default = int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                 capture_output=True, text=True, check=True, env=_env(None)).stdout)
    chosen = choose_threads()
    return {"1 thread": (1, None), f"torch default ({default})": (default, None),
            f"privtune's choice ({chosen}), spin-wait": (chosen, None),
            f"privtune's choice ({chosen}), OMP_WAIT_POLICY=PASSIVE": (chosen, "PASSIVE")}


def _env(policy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "PRIVTUNE_THREADS")}
    return {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **({"OMP_WAIT_POLICY": policy}
                                                                                 if policy else {})}


def _dataset(tmp: Path):
    from privtune.artifacts import Workspace
    from privtune.data import prep

    records = tmp / "tickets.jsonl"
    records.write_text("\n".join((DATA / "tickets.jsonl").read_text().splitlines()[:240]) + "\n")
    artifact, _ = prep.run([records], str(tiny_model()), prep.PrepConfig(max_length=128), Workspace(tmp / "runs"))
    return artifact


def worker(dataset: str, threads: int, workdir: str) -> dict:
    """In a fresh process: seconds for TRAIN_STEPS steps of `privtune train` and one generation batch."""
    import torch

    from privtune.artifacts import Workspace
    from privtune.config import load_recipe
    from privtune.models.inference import load_for_inference
    from privtune.train import stage as sft
    from privtune.train.config import TrainConfig
    from privtune.ui import quiet_libraries

    quiet_libraries()
    config, _ = load_recipe(TrainConfig, "lora", [f"max_steps={TRAIN_STEPS}", "eval_steps=0", "save_steps=100000",
                                                  "logging_steps=1000", "batch_size=8", "max_length=128",
                                                  f"threads={threads}"])
    workspace = Workspace(workdir)
    artifact, _ = sft.run(dataset, str(tiny_model()), config, workspace, sft.TrainOptions(force=True))
    loaded = load_for_inference(str(tiny_model()), workspace, device="cpu")
    torch.set_num_threads(threads)
    return {"train_s": artifact.manifest["metrics"]["train_runtime_s"], "generate_s": generate_seconds(loaded)}


def generate_seconds(loaded) -> float:
    """One batch of GEN_BATCH prompts, GEN_TOKENS greedy tokens each (no early stop), after a warm-up."""
    import torch

    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Ticket {n}: my order is late."}],
                                             tokenize=False, add_generation_prompt=True) for n in range(GEN_BATCH)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(loaded.model.device)
    elapsed = []
    with torch.no_grad():
        for tokens in (4, GEN_TOKENS):
            start = time.perf_counter()
            loaded.model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)
            elapsed.append(time.perf_counter() - start)
    return elapsed[-1]


def measure() -> dict[str, tuple[int, list[float], list[float]]]:
    """label -> (threads, train steps/s per run, generated tokens/s per run)."""
    chosen = settings()
    runs: dict[str, list[dict]] = {label: [] for label in chosen}
    with tempfile.TemporaryDirectory(dir=OUT) as name:
        dataset = _dataset(Path(name))
        for _ in range(REPEATS):
            for label, (threads, policy) in chosen.items():
                code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_threads; "
                        f"print(json.dumps(bench_threads.worker({str(dataset.path)!r}, {threads}, {name!r})))")
                runs[label].append(_run_worker(code, policy))
    return {label: (chosen[label][0], [TRAIN_STEPS / r["train_s"] for r in rs],
                    [GEN_BATCH * GEN_TOKENS / r["generate_s"] for r in rs]) for label, rs in runs.items()}


def _run_worker(code: str, policy: str | None) -> dict:
    """One measurement; a worker past WORKER_TIMEOUT_S (oversubscribed spin-waiting) counts as rate 0."""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(policy),
                             timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"train_s": math.inf, "generate_s": math.inf}
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def rows() -> list[Row]:
    results = measure()
    one = results["1 thread"]
    passive = next(v for k, v in results.items() if "PASSIVE" in k)
    spin = next(v for k, v in results.items() if "spin-wait" in k)
    note = (f"tiny model, CPU, median (min-max) of {REPEATS} processes; spin-wait at {spin[0]} threads: train "
            f"{spread(spin[1], '.2f')} steps/s, generate {spread(spin[2], ',.0f')} tok/s")
    train, gen = statistics.median(passive[1]), statistics.median(passive[2])
    return [Row(f"train steps/s, tiny lora, {passive[0]} threads + OMP_WAIT_POLICY=PASSIVE vs 1 thread",
                spread(passive[1], ".2f"), spread(one[1], ".2f"), train / statistics.median(one[1]), "report", None,
                note),
            Row(f"greedy generation tok/s, batch {GEN_BATCH}, {passive[0]} threads + PASSIVE vs 1 thread",
                spread(passive[2], ",.0f"), spread(one[2], ",.0f"), gen / statistics.median(one[2]), "report", None,
                note)]


def main() -> None:
    from privtune.runtime import cpu_quota, physical_cores

    OUT.mkdir(exist_ok=True)
    print(f"{os.cpu_count()} logical CPUs, {physical_cores()} usable physical cores, cgroup quota {cpu_quota()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| setting | threads | train steps/s, median (min-max) | generate tok/s, median (min-max) |")
    print("|---|---|---|---|")
    for label, (threads, train, gen) in measure().items():
        print(f"| {label} | {threads} | {spread(train, '.2f')} | {spread(gen, ',.0f')} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
