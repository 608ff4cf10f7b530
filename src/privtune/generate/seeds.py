"""Seed tasks for self-instruct: Alpaca's seed_tasks.jsonl form, or any format prep reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from privtune.data.formats import RawRecord, read_records
from privtune.data.dataset import PrepConfig, load_examples
from privtune.errors import PrivtuneError


@dataclass
class Seed:
    id: str
    instruction: str
    input: str
    output: str


def _from_seed_task(record: RawRecord) -> Seed:
    data = record.data
    for field in ("instruction", "instances"):
        if field not in data:
            raise PrivtuneError("missing", source=record.source, line=record.line, field=field)
    instances = data["instances"]
    if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        raise PrivtuneError("expected a non-empty list of {input, output}", source=record.source,
                            line=record.line, field="instances")
    first = instances[0]
    if not isinstance(data["instruction"], str) or not data["instruction"].strip():
        raise PrivtuneError("empty", source=record.source, line=record.line, field="instruction")
    if not isinstance(first.get("output"), str) or not first["output"].strip():
        raise PrivtuneError("missing or empty", source=record.source, line=record.line, field="instances[0].output")
    return Seed(str(data.get("id", f"line-{record.line}")), data["instruction"].strip(),
                str(first.get("input") or "").strip(), first["output"].strip())


def load_seeds(path: Path) -> list[Seed]:
    """Seeds from Alpaca's seed_tasks.jsonl form, or from any file `privtune prep` reads."""
    records = list(read_records(path))
    if isinstance(records[0].data, dict) and "instances" in records[0].data:
        return [_from_seed_task(r) for r in records]
    examples, _, _ = load_examples([path], PrepConfig())
    seeds = []
    for example in examples:
        messages = example["messages"]
        user = next(m["content"] for m in messages if m["role"] == "user")
        instruction, _, extra = user.partition("\n\n")
        seeds.append(Seed(f"line-{example['meta']['line']}", instruction, extra, messages[-1]["content"]))
    return seeds
