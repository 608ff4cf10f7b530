"""Preference tuning on the real demo model (SmolLM2-135M-Instruct, CPU), through the privtune CLI:

  SFT (the demo's LoRA recipe, merged) -> generate --preferences (the SFT model's own sampled answers to
  the train tickets, judged in both orders) -> DPO from the SFT model -> eval DPO vs its SFT parent on the
  held-out tickets (greedy, and sampled at temperature 1), with the judge's win rate, and on the held-out
  pairs -> a reward model on the same pairs, its held-out accuracy.

The judge is benchmarks/scripted_judge.py, a scripted local endpoint (JSON validity, category and
priority against the reference). Every step is an artifact in --workspace, so a rerun reuses what exists
(pointing it at the demo's workspace reuses the demo's SFT model).

    .venv/bin/python benchmarks/preference_real.py --workspace demo-out/runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
PRIVTUNE = [sys.executable, "-m", "privtune"]


def cli(*args: str, log: Path) -> tuple[str, float]:
    """One privtune command; the artifact id on its last line and its wall seconds."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ privtune {' '.join(args)}\n")
        out.flush()
        done = subprocess.run([*PRIVTUNE, *args], stdout=subprocess.PIPE, stderr=out, text=True, cwd=ROOT)
        out.write(done.stdout)
    if done.returncode:
        raise SystemExit(f"privtune {args[0]} failed ({done.returncode}); see {log}")
    print(f"  privtune {' '.join(args[:1])}: {time.perf_counter() - start:.0f} s", flush=True)
    return done.stdout.strip().splitlines()[-1].split()[1], time.perf_counter() - start


def sets(overrides: str) -> list[str]:
    """`a=1 b=2` as `--set a=1 --set b=2`."""
    return [part for item in overrides.split() for part in ("--set", item)]


def manifest(workspace: Path, artifact_id: str) -> dict:
    return json.loads((next(workspace.glob(f"*-{artifact_id}")) / "manifest.json").read_text())


def main() -> None:
    from bench_serve_real import smol_gguf
    from scripted_judge import serve

    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", type=Path, default=ROOT / "bench-out" / "preference-real")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--dpo", default="learning_rate=5e-4 epochs=2 preference.sft_weight=1.0",
                        help="--set overrides of the dpo recipe")
    parser.add_argument("--reward", default="learning_rate=1e-3 epochs=3", help="--set overrides of the reward recipe")
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    log = workspace.parent / "preference-real.log"
    judge = serve(0)
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{judge.server_address[1]}/v1"
    ws = ("--workspace", str(workspace))

    base, _ = cli("import", str(smol_gguf()), *ws, log=log)
    data, _ = cli("prep", "--data", "data/tickets.jsonl", "--model", base, *ws, log=log)
    sft, _ = cli("train", "--recipe", "recipes/demo-lora.yaml", "--data", data, "--model", base, "--merge", *ws, log=log)
    pairs, pairs_s = cli("generate", "--preferences", "--model", sft, "--data", data, "--judge-url", url,
                         "--judge-model", "ticket-judge", "--set", f"samples={args.samples}", "--set", "max_new_tokens=32",
                         "--set", "batch_size=16",
                         *ws, log=log)
    dpo, dpo_s = cli("train", "--recipe", "dpo", "--data", pairs, "--model", sft, *sets(args.dpo), *ws, log=log)
    evaluation, _ = cli("eval", "--model", dpo, "--data", data, "--judge-url", url, "--judge-model",
                             "ticket-judge", "--set", "max_new_tokens=32", *ws, log=log)
    sampled, _ = cli("eval", "--model", dpo, "--data", data, "--judge-url", url, "--judge-model", "ticket-judge",
                     "--set", "max_new_tokens=32", "--set", "temperature=1.0", *ws, log=log)
    ranking, _ = cli("eval", "--model", dpo, *ws, log=log)  # on its own pairs' held-out split, against the SFT model
    reward, reward_s = cli("train", "--recipe", "reward", "--data", pairs, "--model", sft, *sets(args.reward),
                           *ws, log=log)
    reward_ranking, _ = cli("eval", "--model", reward, *ws, log=log)

    judged = manifest(workspace, pairs)["metrics"]
    dpo_metrics = manifest(workspace, dpo)["metrics"]
    reward_metrics = manifest(workspace, reward)["metrics"]
    print(f"\nworkspace {workspace}; judge requests {judge.requests}")
    print("| step | figure |\n|---|---|")
    print(f"| generate --preferences ({pairs_s:.0f} s) | compared {judged['judge']['compared']}, kept {judged['judge']['kept']}, "
          f"identical {judged['judge']['identical']}, ties {judged['judge']['ties']}, disagreed {judged['judge']['disagreed']}; "
          f"pairs train/validation/test {judged.get('splits')} |")
    print(f"| dpo ({dpo_s:.0f} s) | " + ", ".join(f"{k} {v:.3f}" for k, v in dpo_metrics.items()
                                              if isinstance(v, float) and k.startswith(("eval_", "train_loss"))) + " |")
    for label, artifact in (("greedy", evaluation), ("sampled, temperature 1", sampled)):
        report = manifest(workspace, artifact)["metrics"]
        judged = report["judge"]
        print(f"| eval dpo vs sft, {label} | judge win rate {judged['win_rate']:.3f} [{judged['ci_low']:.3f}, "
              f"{judged['ci_high']:.3f}] ({judged['wins']} wins, {judged['ties']} ties, {judged['losses']} losses) |")
        for metric in ("exact_match", "json_field_accuracy"):
            models, intervals = report["models"], report["intervals"]
            print(f"| {metric}, {label} | dpo {models['tuned'][metric]:.3f} {intervals['tuned'][metric]}, "
                  f"sft {models['baseline'][metric]:.3f} {intervals['baseline'][metric]} |")
    print(f"| reward ({reward_s:.0f} s) | " + ", ".join(f"{k} {v:.3f}" for k, v in reward_metrics.items()
                                                    if isinstance(v, float) and "accuracy" in k) + " |")
    for label, artifact in (("dpo vs sft", ranking), ("reward model", reward_ranking)):
        ranked = manifest(workspace, artifact)["metrics"]
        print(f"| eval on held-out pairs, {label} ({ranked['examples']} pairs) | " + "; ".join(
            f"{model} {metric} {value:.3f} {ranked['intervals'].get(model, {}).get(metric)}"
            for model, values in ranked["models"].items() for metric, value in values.items()) + " |")
    judge.shutdown()


if __name__ == "__main__":
    main()
