"""GPU rows on the real model (SmolLM2-135M-Instruct): a QLoRA run and a LoRA run through the privtune
CLI on the demo tickets, each evaluated against the base, then serve rows (privtune serve, sequential
and `--batching`, beside `transformers serve --continuous-batching`) at concurrency 1, 8 and 16.

Run on a machine with an NVIDIA GPU (CI has none), with privtune importable:
    python benchmarks/gpu_real.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out gpu-out
Every command's output goes to --out; the tables print at the end. GPU_REAL_SERVERS="privtune serve
--batching,..." measures only the servers named. Peak memory is nvidia-smi's
memory.used sampled every 200 ms while the command ran (the whole process, CUDA context included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
PRIVTUNE = [sys.executable, "-m", "privtune"]
DEVICE = "cuda"
CONCURRENCY = (1, 8, 16)
ONLY = [name for name in os.environ.get("GPU_REAL_SERVERS", "").split(",") if name]


def sh(command: list[str], log: Path, timeout: float = 900) -> tuple[str, float, float]:
    """Run a CLI command; its last stdout line, wall seconds and peak GPU MiB (nvidia-smi)."""
    sampler = subprocess.Popen(["nvidia-smi" if DEVICE == "cuda" else "true", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                "-lms", "200"], stdout=subprocess.PIPE, text=True)
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=out, text=True, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    sampler.terminate()
    samples = [int(x) for x in sampler.communicate()[0].split() if x.isdigit()]
    with log.open("a") as out:
        out.write(done.stdout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[2:4])} failed ({done.returncode}); see {log}")
    return done.stdout.strip().splitlines()[-1].split()[1], wall, max(samples, default=0)


def manifest(workspace: Path, artifact_id: str) -> dict:
    folder = next(workspace.glob(f"*-{artifact_id}"))
    return json.loads((folder / "manifest.json").read_text())


def train_tokens(workspace: Path, dataset_id: str) -> int:
    """Tokens in the train split as privtune tokenized it (what one epoch trains on)."""
    from datasets import Dataset

    folder = next(workspace.glob(f"*-{dataset_id}")) / "tokenized"
    table = Dataset.from_parquet(str(next(folder.glob("train*.parquet"))))
    return sum(len(ids) for ids in table["input_ids"])


def train_rows(base: str, out: Path, epochs: int, recipes: list[str], extra: list[str]) -> list[str]:
    workspace = out / "runs"
    dataset, _, _ = sh([*PRIVTUNE, "prep", "--data", str(ROOT / "data/tickets.jsonl"), "--model", base,
                        "--workspace", str(workspace)], out / "prep.log")
    tokens = train_tokens(workspace, dataset)
    lines = ["| run | wall s | train s | reply-and-prompt tokens/s | peak GPU MiB | val loss start -> end | "
             "eval exact_match tuned vs base [95% CI] |", "|---|---|---|---|---|---|---|"]
    for recipe in recipes:
        try:
            model, wall, peak = sh([*PRIVTUNE, "train", "--recipe", recipe, "--data", dataset, "--model", base,
                                    "--workspace", str(workspace), "--set", f"epochs={epochs}",
                                    "--set", "eval_steps=0", "--set", "batch_size=2", *extra], out / f"train-{recipe}.log")
            m = manifest(workspace, model)["metrics"]
            _, _, _ = sh([*PRIVTUNE, "eval", "--model", model, "--workspace", str(workspace),
                          "--set", "max_new_tokens=32"], out / f"eval-{recipe}.log")
            exact = _metric_line(sorted(workspace.glob("eval-*/report.md"), key=os.path.getmtime)[-1], "exact_match")
            lines.append(f"| {recipe} (bf16 compute, packed bfd, batch 2 x 1024, {epochs} epochs, {m['steps']} steps) | "
                         f"{wall:.0f} | {m['train_runtime_s']:.1f} | {tokens * m['epochs'] / m['train_runtime_s']:,.0f} | "
                         f"{peak:,} | {m['eval_loss_start']:.3f} -> {m['eval_loss_end']:.3f} | {exact} |")
        except Exception as exc:  # one failing run still leaves the others' rows
            lines.append(f"| {recipe} | failed: {exc} | | | | | |")
    return lines


def _metric_line(report: Path, metric: str) -> str:
    for line in report.read_text().splitlines():
        if line.startswith(f"| {metric} |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            return f"{cells[1]} vs {cells[2]}"
    return "-"


def serve_rows(base: str, out: Path, workspace: Path) -> list[str]:
    import bench_serve_real as serve
    from privtune.artifacts import Workspace
    from privtune.models.loading import resolve_model

    model = resolve_model(base, Workspace(workspace))
    artifact_id, folder = model.artifact.id, Path(model.location)
    privtune = [*PRIVTUNE, "serve", artifact_id, "--workspace", str(workspace)]
    transformers = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; "
                    "sys.argv[0] = 'transformers'; sys.exit(main())", "serve", str(folder), "--host", "127.0.0.1",
                    "--device", DEVICE]
    # the sequential server answers one request at a time: measured at concurrency 1 only
    servers = {"privtune serve": (privtune, artifact_id, (1,)),
               "privtune serve --batching": ([*privtune, "--batching"], artifact_id, CONCURRENCY),
               "transformers serve --continuous-batching": ([*transformers, "--continuous-batching"], str(folder),
                                                            CONCURRENCY)}
    servers = {name: entry for name, entry in servers.items() if not ONLY or name in ONLY}
    lines = [f"| server ({serve.REQUESTS} chat requests x {serve.MAX_TOKENS} tokens, greedy) | tok/s at 1 | at 8 | "
             f"at 16 | 16 / 1 | p95 s |", "|---|---|---|---|---|---|"]
    answers = {}
    for index, (name, (command, model_name, levels)) in enumerate(servers.items()):
        try:
            log = out / f"serve-{index}.log"
            rates, p95, answers[name] = _measure(serve, command, model_name, log, levels)
            cells = [f"{rates[c]:.0f}" if c in rates else "-" for c in CONCURRENCY]
            top = max(rates)
            lines.append(f"| {name} | {' | '.join(cells)} | {rates[top] / rates[1]:.1f}x | {p95:.2f} at {top} |")
        except Exception as exc:
            lines.append(f"| {name} | failed: {exc} | | | | |")
    if "privtune serve" in answers and "privtune serve --batching" in answers:
        same = sum(a == b for a, b in zip(answers["privtune serve"][1], answers["privtune serve --batching"][16]))
        lines.append(f"\nprivtune --batching answers at 16 equal the sequential server's at 1: {same}/{serve.REQUESTS}")
    return lines


def _measure(serve, command: list[str], model: str, log: Path, levels):
    port = serve._free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as err:
        process = subprocess.Popen([*command, "--port", str(port)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                   stdout=err, stderr=err)
        try:
            serve._wait(url, process, seconds=240)
            asyncio.run(serve._warm(url, model))
            rates, answers = {}, {}
            for concurrency in levels:
                rates[concurrency], latencies, answers[concurrency] = asyncio.run(serve.load(url, model, concurrency))
        finally:
            serve.stop(process)
    return rates, serve.p95(latencies), answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("gpu-out"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--recipes", default="qlora,lora")
    parser.add_argument("--smoke", action="store_true", help="on a CPU: 2 train steps, 4 requests x 8 tokens")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    global DEVICE
    import bench_serve_real

    extra = []
    if args.smoke:
        DEVICE, bench_serve_real.REQUESTS, bench_serve_real.MAX_TOKENS = "cpu", 16, 4
        extra = ["--set", "max_steps=2"]
    print(f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu'}, torch {torch.__version__}", flush=True)
    base, _, _ = sh([*PRIVTUNE, "import", str(args.gguf), "--workspace", str(args.out / "runs")],
                    args.out / "import.log")
    tables = [] if args.skip_train else train_rows(base, args.out, args.epochs, args.recipes.split(","), extra)
    print("\n".join(tables), flush=True)
    serve = serve_rows(base, args.out, args.out / "runs")
    print("\n".join(serve), flush=True)
    (args.out / "tables.md").write_text("\n".join(tables + [""] + serve) + "\n")


if __name__ == "__main__":
    main()
