"""The closed loop on the real model: privtune serve --batching of SmolLM2-135M-Instruct as the teacher of
`privtune generate` (the same model as the student), one generation style after another against the same
server in one run. Reported per style: examples kept per minute, requests/s, the share of answers parsed into
tasks, and three kept examples (printed, and written to bench-out/closed-loop-samples.json).

Each style gets the same wall-clock budget (BUDGET_S seconds from the generate process's start, its start-up
included; then it is interrupted, and what it kept is counted), 8 requests in flight, max_tokens 384:
- self_instruct, 5 tasks a request (Alpaca's prompt): generate as it ran before styles existed;
- self_instruct, 1 task a request: the cheap change for a small teacher;
- magpie: the teacher writes each instruction from its chat template's pre-query text (derived from the
  served model's own template), then answers it (greedy).

    .venv/bin/python benchmarks/run.py bench_closed_loop
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

from bench_serve_real import BIN, ROOT, _free_port, _wait, real_model
from common import OUT, Row

BUDGET_S = 110
COMMON = ["max_tokens=384", "timeout=900"]
STYLES = {
    "self_instruct, 5 tasks/request": ["style=self_instruct", "tasks_per_request=5"],
    "self_instruct, 1 task/request": ["style=self_instruct", "tasks_per_request=1"],
    "magpie": ["style=magpie"],
}


def run_style(name: str, settings: list[str], url: str, artifact_id: str, workspace) -> dict:
    runs = OUT / f"closed-loop-{name.split(',')[0]}-{settings[-1].split('=')[-1]}"
    shutil.rmtree(runs, ignore_errors=True)
    # the student model's artifact, without sharing the teacher's workspace or its unfinished runs (.staging)
    shutil.copytree(workspace, runs, ignore=shutil.ignore_patterns(".staging"))
    command = [str(BIN / "privtune"), "generate", "--model", artifact_id, "--seeds", str(ROOT / "data" / "seeds.jsonl"),
               "--num", "1000", "--teacher-url", f"{url}/v1", "--teacher-model", artifact_id, "--concurrency", "8",
               "--workspace", str(runs), *[a for s in COMMON + settings for a in ("--set", s)]]
    start = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=BUDGET_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # generate writes progress.json on its way out
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    wall = time.perf_counter() - start
    folder = next(iter(runs.glob(".staging/dataset-*")), None) or next(iter(runs.glob("dataset-*")), None)
    if folder is None:
        raise RuntimeError(f"{name}: generate left no staging folder: {process.stderr.read()[-2000:]}")
    kept = [json.loads(line) for line in (folder / "generated.jsonl").read_text().splitlines()]
    progress = json.loads((folder / "progress.json").read_text()) if (folder / "progress.json").exists() else {}
    sent = len((folder / "egress.jsonl").read_text().splitlines())
    return {"wall": wall, "kept": len(kept), "sent": sent, "progress": progress,
            "samples": [{k: r[k] for k in ("instruction", "input", "output")} for r in kept[:3]]}


def describe(r: dict) -> str:
    g = r["progress"]
    blocks = g.get("parsed", 0) + g.get("unparsed_blocks", 0)
    share = f"{g.get('parsed', 0) / blocks:.0%} of {blocks}" if blocks else "0 of 0"
    return (f"{per_minute(r):.1f} kept/min ({r['kept']} kept, {r['sent'] / r['wall']:.2f} req/s, {share} "
            f"answers/task blocks parsed, {g.get('completion_tokens', 0) / r['wall']:.1f} completion tok/s, "
            f"{r['wall']:.0f} s)")


def per_minute(r: dict) -> float:
    return r["kept"] / (r["wall"] / 60)


def rows() -> list[Row]:
    artifact_id, _, workspace = real_model()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(BIN / "privtune"), "serve", artifact_id, "--workspace", str(workspace),
                               "--port", str(port), "--batching"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(url, server)
        results = {name: run_style(name, settings, url, artifact_id, workspace) for name, settings in STYLES.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)
    samples = {name: r["samples"] for name, r in results.items()}
    (OUT / "closed-loop-samples.json").write_text(json.dumps(samples, indent=1, ensure_ascii=False))
    for name, kept in samples.items():
        print(f"--- {name}: first kept examples")
        for example in kept:
            print(json.dumps(example, ensure_ascii=False)[:600])
    baseline_name = next(iter(STYLES))
    baseline = results[baseline_name]
    out = []
    for name, r in results.items():
        if name == baseline_name:
            continue
        out.append(Row(f"closed loop, privtune serve --batching of the real model as teacher, {BUDGET_S} s each: "
                       f"{name} vs {baseline_name}", describe(r), describe(baseline),
                       per_minute(r) / per_minute(baseline) if baseline["kept"] else None, "(measured)", None,
                       f"same server, seeds, concurrency 8, {', '.join(COMMON)}; style settings: {', '.join(STYLES[name])}"))
    return out
