"""Encoder-decoder models (Flan-T5 family): the same recipes through transformers' Seq2SeqTrainer.

The encoder reads the conversation up to the last reply; the decoder learns the last reply and
the end-of-sequence token.
"""

from __future__ import annotations

import json

from privtune.artifacts import Artifact
from privtune.train.config import TrainConfig


def split_conversation(messages: list[dict]) -> tuple[str, str]:
    """Source text (every turn before the last reply) and target text (the last reply)."""
    history = "\n".join(f"{m['role']}: {m['content']}" for m in messages[:-1])
    return history, messages[-1]["content"]


def _examples(dataset: Artifact, split: str, tokenizer, max_length: int):
    from datasets import Dataset

    path = dataset.path / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        return None
    sources, targets = zip(*(split_conversation(r["messages"]) for r in rows))
    encoded = tokenizer(list(sources), max_length=max_length, truncation=True, add_special_tokens=False)
    labels = tokenizer(list(targets), max_length=max_length - 1, truncation=True, add_special_tokens=False)
    encoded["labels"] = [ids + [tokenizer.eos_token_id] for ids in labels["input_ids"]]
    return Dataset.from_dict(dict(encoded))


def build_trainer(model, tokenizer, adapter, dataset: Artifact, config: TrainConfig, args: dict, callbacks):
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if adapter is not None:
        model = get_peft_model(model, adapter)
    trainer = Seq2SeqTrainer(
        model=model, args=Seq2SeqTrainingArguments(**args),
        train_dataset=_examples(dataset, "train", tokenizer, config.max_length),
        eval_dataset=_examples(dataset, "validation", tokenizer, config.max_length),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer, callbacks=callbacks)
    for noisy in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(noisy)
    return trainer
