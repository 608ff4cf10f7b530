"""Train rows: supervised tokens/s of the default recipe against a naive padded Trainer baseline.

Both train the same tiny model with the same LoRA adapters on the same Alpaca-like examples (many
short, a long tail) for one epoch. The baseline is what a plain script does: transformers'
Trainer, random batches padded to their longest example, no packing, no length grouping.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from common import OUT, Row, alpaca_like_records, tiny_model

EXAMPLES = 384
BATCH = 8


def _prepped(tmp: Path):
    from privtune.artifacts import Workspace
    from privtune.data import prep

    records, origin = alpaca_like_records(EXAMPLES, seed=3)
    path = tmp / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    config = prep.PrepConfig(max_length=1024, overlength="truncate", validation_fraction=0.0, test_fraction=0.0)
    artifact, _ = prep.run([path], str(tiny_model()), config, Workspace(tmp / "runs"))
    return artifact, origin


def ideal_ratio(lengths: list[int], seed: int = 42) -> float:
    """Σ padded tokens ÷ Σ real tokens for random batches padded to their longest example."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    padded = sum(max(order[i:i + BATCH]) * len(order[i:i + BATCH]) for i in range(0, len(order), BATCH))
    return padded / sum(order)


def naive_baseline(dataset, lengths: list[int]) -> float:
    """Seconds for one epoch with a plain Trainer and pad-to-longest batches."""
    import pyarrow.parquet as pq
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    rows = pq.read_table(dataset.path / "tokenized" / "train.parquet").to_pylist()
    train = Dataset.from_list([{"input_ids": r["input_ids"],
                                "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])]}
                               for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model())
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model()),
                           LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(OUT / "naive"), per_device_train_batch_size=BATCH, num_train_epochs=1,
                             learning_rate=2e-4, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                             logging_steps=1000, disable_tqdm=True, seed=42)
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100))
    return trainer.train().metrics["train_runtime"]


def privtune_default(dataset, tmp: Path) -> float:
    """Seconds for one epoch of `privtune train` with the default recipe (lora), as shipped."""
    from privtune.artifacts import Workspace
    from privtune.config import load_recipe
    from privtune.train import stage as sft
    from privtune.train.config import TrainConfig

    config, _ = load_recipe(TrainConfig, "lora", ["epochs=1", "eval_steps=0", "save_steps=100000", "threads=1",
                                                  "logging_steps=1000"])
    artifact, _ = sft.run(str(dataset.path), str(tiny_model()), config, Workspace(tmp / "runs"))
    return artifact.manifest["metrics"]["train_runtime_s"]


def rows() -> list[Row]:
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(dir=OUT) as name:
        tmp = Path(name)
        dataset, origin = _prepped(tmp)
        lengths = [len(ids) for ids in pq.read_table(dataset.path / "tokenized" / "train.parquet")
                   .column("input_ids").to_pylist()]
        real = sum(lengths)
        ours = privtune_default(dataset, tmp)
        naive = naive_baseline(dataset, lengths)
    ideal = ideal_ratio(lengths)
    ratio = naive / ours
    return [Row(f"train tokens/s, default recipe (lora), tiny model, CPU, {len(lengths)} examples",
                f"{real / ours:,.0f} tok/s", f"{real / naive:,.0f} tok/s (Trainer, pad to longest)", ratio,
                ">= 2x", ratio >= 2,
                f"supervised = real (non-padding) tokens; ideal ratio Σpadded/Σreal = {ideal:.2f}; lengths "
                f"mean {real / len(lengths):.0f}, max {max(lengths)}; records {origin}; 1 torch thread; "
                f"packing auto -> length-grouped batches on CPU")]
