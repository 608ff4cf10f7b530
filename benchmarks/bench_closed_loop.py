"""The closed loop on the real model: privtune serve of SmolLM2-135M-Instruct as the teacher of
`privtune generate` (privtune's data/seeds.jsonl, the same model as the student), with the server sequential and
with `--batching`, side by side in one run. Reported: requests/s, examples kept per minute, the share
of answers parsed into tasks.

Both runs get the same budget (REQUESTS requests, 8 in flight, max_tokens 384, 5 tasks a request,
Alpaca's prompt); generate stops at the budget and keeps what passed its filters.

    .venv/bin/python benchmarks/run.py bench_closed_loop
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from bench_serve_real import BIN, ROOT, _free_port, _wait, real_model
from common import OUT, Row

REQUESTS = 16
SETTINGS = ["max_tokens=384", "tasks_per_request=5", "timeout=900"]


def run_loop(batching: bool, artifact_id: str, workspace) -> dict:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([str(BIN / "privtune"), "serve", artifact_id, "--workspace", str(workspace),
                               "--port", str(port), *(["--batching"] if batching else [])],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = OUT / f"closed-loop-{'batched' if batching else 'sequential'}"
    shutil.rmtree(runs, ignore_errors=True)
    shutil.copytree(workspace, runs)  # the student model's artifact, without sharing the teacher's workspace
    try:
        _wait(url, server)
        start = time.perf_counter()
        subprocess.run([str(BIN / "privtune"), "generate", "--model", artifact_id, "--seeds",
                        str(ROOT / "data" / "seeds.jsonl"), "--num", "200", "--teacher-url", f"{url}/v1",
                        "--teacher-model", artifact_id, "--concurrency", "8", "--max-requests", str(REQUESTS),
                        "--workspace", str(runs), *[a for s in SETTINGS for a in ("--set", s)]],
                       env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    manifests = [json.loads(p.read_text()) for p in runs.glob("dataset-*/manifest.json")]
    generated = [m for m in manifests if m.get("stage") == "generate"]
    progress = list(runs.glob("dataset-*/progress.json")) + list(runs.glob(".staging/dataset-*/progress.json"))
    if not generated:  # nothing kept: generate stopped with an error; its progress file still has the counts
        g = json.loads(progress[0].read_text()) if progress else {}
        return {"wall": wall, "kept": 0, "requests": g.get("requests", REQUESTS), "parsed_tasks": g.get("parsed", 0),
                "unparsed": g.get("unparsed_blocks", 0), "completion_tokens": g.get("completion_tokens", 0)}
    g = generated[0]["metrics"]["generation"]
    return {"wall": wall, "kept": generated[0]["metrics"]["generated"], "requests": g["requests"],
            "parsed_tasks": g["parsed"], "unparsed": g["unparsed_blocks"], "malformed": g["malformed_responses"],
            "completion_tokens": g["completion_tokens"]}


def rows() -> list[Row]:
    artifact_id, _, workspace = real_model()
    sequential, batched = run_loop(False, artifact_id, workspace), run_loop(True, artifact_id, workspace)

    def per_minute(r):
        return r["kept"] / (r["wall"] / 60)

    def describe(r):
        parsed = r.get("parsed_tasks", 0)
        share = parsed / (parsed + r.get("unparsed", 0)) if parsed + r.get("unparsed", 0) else 0.0
        return (f"{per_minute(r):.1f} kept/min ({r['kept']} kept, {r['requests'] / r['wall']:.2f} req/s, "
                f"{r.get('completion_tokens', 0) / r['wall']:.1f} completion tok/s, {share:.0%} of task blocks parsed, "
                f"{r['wall']:.0f} s)")

    return [Row(f"closed loop: generate with privtune serve of the real model as teacher, {REQUESTS} requests",
                describe(batched), describe(sequential), per_minute(batched) / max(per_minute(sequential), 1e-9),
                "(measured)", None, "privtune = serve --batching, baseline = serve (sequential); same seeds, "
                "concurrency 8, " + ", ".join(SETTINGS))]
