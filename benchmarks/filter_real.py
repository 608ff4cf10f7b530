"""The quality filter on a generated set, on the real model (SmolLM2-135M-Instruct, CPU), through the CLI:

  privtune serve --batching of the model -> privtune generate --set style=magpie (the served model is the
  teacher) -> privtune filter, twice: the same served model as the judge, then benchmarks/scripted_judge.py
  (refusals, self-talk and near-empty responses rated low)

and for each judge the share of ratings that gave a score, the score distribution, the kept share with its
interval, and a few dropped examples with the judge's reasons.

    .venv/bin/python benchmarks/filter_real.py --num 40 --min-score 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from bench_serve_real import BIN, ROOT, _free_port, _wait, real_model, stop
    from scripted_judge import serve

    parser = argparse.ArgumentParser()
    parser.add_argument("--num", type=int, default=40)
    parser.add_argument("--min-score", type=int, default=3)
    parser.add_argument("--data", help="an existing generated dataset in the benchmark workspace (skips generate)")
    args = parser.parse_args()
    artifact_id, _, workspace = real_model()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([str(BIN / "privtune"), "serve", artifact_id, "--workspace", str(workspace),
                               "--port", str(port), "--batching"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def cli(*command: str) -> tuple[str, float]:
        start = time.perf_counter()
        done = subprocess.run([str(BIN / "privtune"), *command, "--workspace", str(workspace)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(f"privtune {command[0]} failed: {done.stderr[-2000:]}{done.stdout[-2000:]}")
        print(done.stdout)
        return done.stdout.strip().splitlines()[-1].split()[1], time.perf_counter() - start

    try:
        _wait(url.removesuffix("/v1"), server)
        generated, generate_s = (args.data, 0.0) if args.data else cli(
            "generate", "--model", artifact_id, "--seeds", str(ROOT / "data" / "seeds.jsonl"), "--num", str(args.num),
            "--teacher-url", url, "--teacher-model", artifact_id, "--concurrency", "8", "--set", "style=magpie",
            "--set", "max_tokens=384", "--set", "timeout=900")
        started = time.time()
        served = subprocess.run([str(BIN / "privtune"), "filter", "--data", generated, "--judge-url", url,
                                 "--judge-model", artifact_id, "--min-score", str(args.min_score), "--set",
                                 "concurrency=8", "--workspace", str(workspace)], env=env, capture_output=True, text=True)
        ratings = [json.loads(line) for path in workspace.glob(".staging/dataset-*/ratings.jsonl")
                   if path.stat().st_mtime >= started for line in path.read_text().splitlines()]
        print(f"served {artifact_id} as the judge: exit {served.returncode}; {served.stdout[-800:]}{served.stderr[-600:]}")
        print(f"  its ratings with a score: {sum(r['score'] is not None for r in ratings)} of {len(ratings)}; "
              f"first replies: {[r['reason'][:100] for r in ratings[:3]]}")
    finally:
        stop(server)
    judge = serve(0)
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    filtered, filter_s = cli("filter", "--data", generated, "--judge-url",
                             f"http://127.0.0.1:{judge.server_address[1]}/v1", "--judge-model", "scripted",
                             "--min-score", str(args.min_score))
    judge.shutdown()
    folder = next(workspace.glob(f"dataset-{filtered}"))
    metrics = json.loads((folder / "manifest.json").read_text())["metrics"]
    print(f"generated {generated} ({generate_s:.0f} s), filtered by the scripted judge {filtered} ({filter_s:.0f} s, "
          f"{metrics['rated'] / filter_s:.2f} ratings/s)")
    print(json.dumps({k: metrics[k] for k in ("rated", "score_distribution", "mean_score", "kept", "kept_share",
                                             "kept_share_interval", "dropped")}))
    for row in [json.loads(line) for line in (folder / "dropped.jsonl").read_text().splitlines()][:3]:
        print(json.dumps({"score": row["score"], "reason": row["reason"][-200:],
                          "instruction": row["example"]["messages"][0]["content"][:200]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
