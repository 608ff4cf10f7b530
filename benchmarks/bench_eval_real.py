"""Eval wall time on the real model against a hand-written script doing the least an eval must:
load both models and generate answers to the same held-out prompts at the same batch size.

privtune: `privtune eval --model <SmolLM2 artifact> --baseline <its folder> --data <tickets prepped for it>`
(the held-out loss pass, generation, metrics, 1,000-resample intervals and paired tests, report, chart).
Baseline: a script that loads the two models with transformers and calls `generate` in batches of 16.
Both run as fresh processes; whole wall time, imports included. privtune picks its threads itself (and
follows the machine's load, runtime.ThreadsFollower); the script is given the count privtune picks.

    .venv/bin/python benchmarks/run.py bench_eval_real
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench_serve_real import BIN, ROOT, real_model
from common import OUT, Row

EXAMPLES = 200  # tickets prepped: 20 held out in the test split
BATCH, MAX_NEW = 16, 128

SCRIPT = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(int(sys.argv[3]))
prompts = json.loads(open(sys.argv[2]).read())
answers = []
for path in (sys.argv[1], sys.argv[1]):  # the tuned model and its baseline (here the same weights, loaded twice)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    for start in range(0, len(texts), %d):
        batch = tokenizer(texts[start:start + %d], return_tensors="pt", padding=True, padding_side="left",
                          add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=%d, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
print(len(answers))
""" % (BATCH, BATCH, MAX_NEW)


def rows() -> list[Row]:
    from privtune.artifacts import Workspace
    from privtune.data import prep
    from privtune.runtime import choose_threads

    artifact_id, folder, workspace = real_model()
    records = OUT / "eval-tickets.jsonl"
    records.write_text("\n".join((ROOT / "data" / "tickets.jsonl").read_text().splitlines()[:EXAMPLES]) + "\n")
    dataset, _ = prep.run([records], artifact_id, prep.PrepConfig(max_length=256), Workspace(workspace))
    test = [json.loads(line) for line in (dataset.path / "test.jsonl").read_text().splitlines()]
    prompts = OUT / "eval-prompts.json"
    prompts.write_text(json.dumps([r["messages"][:-1] for r in test]))
    threads = choose_threads()
    env = {key: value for key, value in os.environ.items() if key not in ("PRIVTUNE_THREADS", "OMP_WAIT_POLICY")}
    env["HF_HUB_OFFLINE"] = "1"

    start = time.perf_counter()
    subprocess.run([str(BIN / "privtune"), "eval", "--model", artifact_id, "--baseline", str(folder), "--data",
                    dataset.id, "--workspace", str(workspace), "--force", "--set", f"batch_size={BATCH}",
                    "--set", f"max_new_tokens={MAX_NEW}"], env=env, check=True, capture_output=True)
    privtune_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(prompts), str(threads)], env=env, check=True,
                   capture_output=True)
    script_s = time.perf_counter() - start
    return [Row(f"eval wall time, real model, {len(test)} held-out tickets, tuned + baseline",
                f"{privtune_s:.1f} s (privtune eval)", f"{script_s:.1f} s (load both + batched generate script)",
                script_s / privtune_s, "privtune <= 1.1x the script's time", privtune_s <= 1.1 * script_s,
                f"batch {BATCH}, max_new_tokens {MAX_NEW}; the script on {threads} torch threads, privtune on the threads "
                "it picks, following the load; privtune also runs the held-out "
                "loss pass, metrics, 1,000-resample intervals and paired tests, the report and chart")]
