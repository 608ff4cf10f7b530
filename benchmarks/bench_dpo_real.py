"""DPO rows on the real model (SmolLM2-135M-Instruct, fp32, CPU): `privtune train --recipe dpo` against
a plain TRL `DPOTrainer` script, in one run, each in a fresh process.

Pairs from the ticket data (data/tickets.jsonl), made here deterministically: the chosen answer is the
reference JSON, the rejected one names the next category. All runs: LoRA r=16, alpha 32, dropout 0,
every linear layer, the base with the adapter off as the reference, beta 0.1, 12 steps of 8 pairs,
learning rate 5e-5, cosine, seed 42, 1 thread, the same prepped splits. Baselines: the plain script with
privtune's settings (fp32, no activation checkpointing: what privtune computes, without its two savings),
and with TRL's defaults (bf16 autocast, activation checkpointing). Reported: pairs/s in the training
loop (evaluations excluded) and the validation DPO loss each adapter reaches, so that faster is not worse.

    .venv/bin/python benchmarks/run.py bench_dpo_real
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench_serve_real import ROOT, real_model
from bench_train_real import BATCH, privtune
from common import OUT, Row

STEPS, LR = 12, 5e-5

SCRIPT = r"""
import json, sys
settings, data, model_path, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
import torch
torch.set_num_threads(1)
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

def rows(split):
    keep = ("prompt", "chosen", "rejected")
    return Dataset.from_list([{k: [{"role": m["role"], "content": m["content"]} for m in e[k]] for k in keep}
                              for e in map(json.loads, open(f"{data}/{split}.jsonl", encoding="utf-8"))])

same = {"bf16": False, "gradient_checkpointing": False} if settings == "privtune" else {}
args = DPOConfig(output_dir=out + ".ckpt", per_device_train_batch_size=%(batch)d, per_device_eval_batch_size=%(batch)d,
                 max_steps=%(steps)d, learning_rate=%(lr)r, lr_scheduler_type="cosine", warmup_steps=0.1, seed=42,
                 beta=0.1, max_length=1024, use_cpu=True, report_to="none", save_strategy="no", logging_steps=4,
                 disable_tqdm=True, **same)
lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), args=args,
                     train_dataset=rows("train"), eval_dataset=rows("validation"),
                     processing_class=AutoTokenizer.from_pretrained(model_path), peft_config=lora)
result = trainer.train()
json.dump({"train_s": result.metrics["train_runtime"], "eval_loss": trainer.evaluate()["eval_loss"]}, open(out, "w"))
""" % {"batch": BATCH, "steps": STEPS, "lr": LR}


def ticket_pairs() -> list[dict]:
    """Each ticket with its reference answer chosen and the same answer with the next category rejected."""
    tickets = [json.loads(line) for line in (ROOT / "data" / "tickets.jsonl").read_text().splitlines() if line]
    categories = sorted({json.loads(t["output"])["category"] for t in tickets})
    pairs = []
    for ticket in tickets:
        answer = json.loads(ticket["output"])
        wrong = {**answer, "category": categories[(categories.index(answer["category"]) + 1) % len(categories)]}
        pairs.append({"prompt": f"{ticket['instruction']}\n\n{ticket['input']}", "chosen": ticket["output"],
                      "rejected": json.dumps(wrong)})
    return pairs


def plain(settings: str, dataset, model_path, env) -> dict:
    out = OUT / f"dpo-real-{settings}.json"
    done = subprocess.run([sys.executable, "-c", SCRIPT, settings, str(dataset.path), str(model_path), str(out)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the plain DPO script ({settings}) failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def rows() -> list[Row]:
    from privtune.artifacts import Workspace
    from privtune.data import prep

    artifact_id, model_path, workspace = real_model()
    records = OUT / "dpo-ticket-pairs.jsonl"
    records.write_text("".join(json.dumps(p) + "\n" for p in ticket_pairs()), encoding="utf-8")
    dataset, _ = prep.run([records], artifact_id, prep.PrepConfig(max_length=256, validation_fraction=0.05),
                          Workspace(workspace))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PRIVTUNE_THREADS")}
    env["HF_HUB_OFFLINE"] = "1"
    start = time.perf_counter()
    ours = privtune(1, dataset, artifact_id, workspace, env, f"learning_rate={LR}", recipe="dpo", steps=STEPS)
    same = plain("privtune", dataset, model_path, env)
    defaults = plain("defaults", dataset, model_path, env)
    wall = time.perf_counter() - start
    pairs = STEPS * BATCH

    def rate(run: dict) -> str:
        return f"{pairs / run['train_s']:.2f} pairs/s (val DPO loss {run['eval_loss']:.4f})"

    ratio = same["train_s"] / ours["train_s"]
    not_worse = ours["eval_loss"] <= same["eval_loss"] + 0.01
    return [
        Row(f"DPO, real model, LoRA r=16 all-linear, {STEPS} steps x {BATCH} ticket pairs, 1 thread", rate(ours),
            f"{rate(same)} (plain TRL DPOTrainer, privtune's settings); {rate(defaults)} (TRL's defaults)", ratio,
            "(measured) val loss not worse", not_worse,
            "pairs/s in the training loop, evaluations excluded; in the policy's pass and the reference's, "
            "privtune's output head scores only the answers' tokens and the prefix every row of a batch shares "
            "(template and instruction) runs once (train.sft_trainer.compact); the same computation otherwise; "
            f"ratio against the faster plain run: {min(same['train_s'], defaults['train_s']) / ours['train_s']:.1f}x; "
            f"{wall:.0f} s for the three runs"),
    ]
