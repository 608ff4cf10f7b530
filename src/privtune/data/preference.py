"""Preference examples (prompt, chosen, rejected) and unpaired ones (prompt, completion, label) -> a dataset
folder that DPO, ORPO and KTO read: each split as JSONL of conversational columns, which TRL's trainers
render with the dataset's chat template (train hands them the tokenizer with it).

Prep checks here what the trainers would otherwise find late or never: that the template renders the
prompt as a prefix of prompt + answer (else the answer tokens cannot be told apart), and each example's
length against max_length. Splits follow the prompt, so pairs that share a prompt never straddle train
and test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from privtune.artifacts import write_atomic
from privtune.data.dataset import (SPLITS, SeenKeys, content_key, refused_by_template, split_of,
                                   with_decontamination)
from privtune.errors import PrivtuneError
from privtune.ui import track

ANSWERS = {"preference": ("chosen", "rejected"), "unpaired": ("completion",)}


def _key(*parts: list[dict]) -> str:
    """The dataset's content_key over the parts' turns, in order: a pair and its reverse differ."""
    return content_key({"messages": [m for part in parts for m in part]})


def rendered_lengths(tokenizer, template: str, prompt: list[dict], answers: list[list[dict]]) -> list[int]:
    """Tokens of prompt + each answer, after checking the prompt renders as their prefix."""
    plain = lambda messages: [{"role": m["role"], "content": m["content"]} for m in messages]
    head = tokenizer.apply_chat_template(plain(prompt), chat_template=template, tokenize=False,
                                         add_generation_prompt=True)
    lengths = []
    for answer in answers:
        full = tokenizer.apply_chat_template(plain(prompt + answer), chat_template=template, tokenize=False)
        if not full.startswith(head):
            raise PrivtuneError("the chat template does not render the prompt as a prefix of prompt + answer, so "
                                "the answer tokens cannot be found", field="template",
                                hint="pass --template chatml or a template without history rewriting")
        lengths.append(len(tokenizer(full, add_special_tokens=False)["input_ids"]))
    return lengths


def write_preference_dataset(folder: Path, examples: Iterable[dict], kind: str, tokenizer, template: str, config,
                             source: str, rejects=None) -> dict:
    """Dedup, length-check and split preference (or unpaired) examples into `folder`; returns the stats."""
    from jinja2 import TemplateError

    counts = dict.fromkeys(("records_read", "duplicates", "overlength_dropped", "template_rejected"), 0)
    splits = dict.fromkeys(SPLITS, 0)
    labels = {"desirable": 0, "undesirable": 0}
    longest = 0
    with SeenKeys(folder / ".seen.sqlite") as seen, \
            open(folder / "train.jsonl", "w", encoding="utf-8") as train, \
            open(folder / "validation.jsonl", "w", encoding="utf-8") as validation, \
            open(folder / "test.jsonl", "w", encoding="utf-8") as test:
        out = {"train": train, "validation": validation, "test": test}
        for example in track(examples, "checking pairs"):
            counts["records_read"] += 1
            answers = [example[name] for name in ANSWERS[kind]]
            label = [{"role": "label", "content": str(example.get("label", "")), "train": False}]
            if config.dedup and not seen.add(_key(example["prompt"], *answers, label)):
                counts["duplicates"] += 1
                continue
            try:
                lengths = rendered_lengths(tokenizer, template, example["prompt"], answers)
            except TemplateError as exc:
                error = refused_by_template(example, str(exc), source)
                if rejects is None:
                    raise error from None
                counts["template_rejected"] += 1
                rejects.add(error, example)
                continue
            if max(lengths) > config.max_length:
                counts["overlength_dropped"] += 1
                continue
            longest = max(longest, *lengths)
            split = split_of(_key(example["prompt"]), config.seed, config.validation_fraction, config.test_fraction)
            out[split].write(json.dumps(example, ensure_ascii=False) + "\n")
            splits[split] += 1
            if kind == "unpaired":
                labels["desirable" if example["label"] else "undesirable"] += 1
    kept = sum(splits.values())
    if not splits["train"]:
        raise PrivtuneError("no usable examples left after filtering" if not kept else
                            "the train split is empty; add records or lower the validation/test fractions",
                            source=source, hint=f"max_length is {config.max_length}" if not kept else None)
    write_atomic(folder / "chat_template.jinja", template)
    stats = {**counts, "rejected": 0, "examples": kept, "splits": splits, "longest": longest}
    stats = with_decontamination(folder, config, stats)
    if kind == "unpaired" and stats.get("decontamination", {}).get("dropped"):
        labels = {"desirable": 0, "undesirable": 0}
        for split in SPLITS:
            for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
                labels["desirable" if json.loads(line)["label"] else "undesirable"] += 1
    return {**stats, "labels": labels} if kind == "unpaired" else stats


def trainer_rows(dataset_path: Path, split: str) -> list[dict]:
    """A split as TRL's conversational columns (roles and contents only)."""
    rows = []
    for line in (dataset_path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        example = json.loads(line)
        row = {key: [{"role": m["role"], "content": m["content"]} for m in example[key]]
               for key in ("prompt", "chosen", "rejected", "completion") if key in example}
        if "label" in example:
            row["label"] = example["label"]
        rows.append(row)
    return rows
