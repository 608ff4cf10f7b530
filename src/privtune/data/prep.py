"""`privtune prep`: a team's own records -> a rendered, tokenized, split dataset artifact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from privtune.artifacts import Artifact, Workspace, input_record, stable_hash, write_atomic
from privtune.config import ConfigValueError, config_dict
from privtune.data.formats import FORMATS, BadRecord, apply_mapping, detect_format, normalize, read_records
from privtune.data.render import choose_template, render_with_spans, tokenize_with_masks, tokenizer_fingerprint
from privtune.errors import PrivtuneError
from privtune.models.loading import load_tokenizer, resolve_model
from privtune.ui import console, track

SPLITS = ("train", "validation", "test")


@dataclass
class PrepConfig:
    format: Literal["auto", "openai", "sharegpt", "alpaca", "dolly", "prompt_completion"] = "auto"
    """Input format; `auto` detects it from the first record's fields."""
    map: dict[str, str] = field(default_factory=dict)
    """Schema field <- source column, e.g. {instruction: question, output: answer}."""
    template: str = "model"
    """Chat template: the model's own, `chatml`, `alpaca`, or a .jinja path."""
    max_length: int = 1024
    """Longest example in tokens."""
    overlength: Literal["drop", "truncate"] = "drop"
    """What to do with longer examples (truncating can cut the end-of-turn token)."""
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    """Seeds the split; the same seed and records always give the same split."""
    dedup: bool = True
    """Remove exact duplicate conversations."""
    skip_bad: bool = False
    """Keep going past bad records, writing them with reasons to rejected.jsonl."""

    def __post_init__(self):
        if self.max_length < 8:
            raise ConfigValueError("max_length", f"must be at least 8, got {self.max_length}")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ConfigValueError(name, f"must be in [0, 0.5), got {getattr(self, name)}")


def load_examples(files: list[Path], config: PrepConfig) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Read and normalise every record; returns examples, rejected records, and the format per file."""
    examples, rejected, formats = [], [], {}
    for path in files:
        fmt = None if config.format == "auto" else config.format
        for record in read_records(path):
            try:
                record = apply_mapping(record, config.map)
                if fmt is None:
                    fmt = detect_format(record)
                    formats[str(path)] = fmt
                examples.append(normalize(record, fmt))
            except BadRecord as exc:
                if not config.skip_bad:
                    raise
                rejected.append({"source": exc.source, "line": exc.line, "field": exc.field,
                                 "error": exc.message, "record": record.data})
        formats.setdefault(str(path), fmt or config.format)
    return examples, rejected, formats


def _content_key(example: dict) -> str:
    turns = [(m["role"], m["content"], m["train"]) for m in example["messages"]]
    return hashlib.sha1(json.dumps(turns, ensure_ascii=False).encode()).hexdigest()


def split_of(key: str, seed: int, validation_fraction: float, test_fraction: float) -> str:
    """A deterministic split from the content hash: adding records never moves existing ones."""
    point = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if point < test_fraction:
        return "test"
    if point < test_fraction + validation_fraction:
        return "validation"
    return "train"


def _percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"min": ordered[0], "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


def tokenize_examples(examples: list[dict], tokenizer, template: str, config: PrepConfig) -> tuple[list, dict]:
    """Render, tokenize and length-filter; returns kept rows and counts of what was dropped or cut."""
    texts, spans = [], []
    for example in track(examples, "rendering"):
        text, example_spans = render_with_spans(tokenizer, template, example["messages"])
        texts.append(text)
        spans.append(example_spans)
    input_ids, masks = tokenize_with_masks(tokenizer, texts, spans)
    rows, counts = [], {"overlength_dropped": 0, "truncated": 0}
    for example, ids, mask in zip(examples, input_ids, masks):
        if len(ids) > config.max_length:
            if config.overlength == "drop":
                counts["overlength_dropped"] += 1
                continue
            counts["truncated"] += 1
            ids, mask = ids[: config.max_length], mask[: config.max_length]
        if not any(mask):
            counts["overlength_dropped"] += 1
            continue
        rows.append((example, ids, mask))
    return rows, counts


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def run(files: list[Path], model: str, config: PrepConfig, workspace: Workspace,
        force: bool = False) -> tuple[Artifact, bool]:
    """Prepare `files` for `model`; returns the artifact and whether it was found rather than built."""
    if not files:
        raise PrivtuneError("no input files", field="--data")
    files = [Path(f) for f in files]
    for path in files:
        if not path.is_file():
            raise PrivtuneError("no such file", source=str(path), field="--data")
    model_ref = resolve_model(model, workspace)
    tokenizer = load_tokenizer(model_ref)
    template = choose_template(tokenizer, config.template)
    fingerprint = tokenizer_fingerprint(tokenizer, template)
    inputs = input_record(files)
    parents = [model_ref.artifact.id] if model_ref.artifact else []
    artifact_id = stable_hash({"stage": "prep", "inputs": [i["sha256"] for i in inputs],
                               "config": config_dict(config), "tokenizer": fingerprint, "parents": parents})
    existing = workspace.get("dataset", artifact_id)
    if existing and not force:
        return existing, True

    examples, rejected, formats = load_examples(files, config)
    read_count = len(examples)
    if config.dedup:
        unique = {}
        for example in examples:
            unique.setdefault(_content_key(example), example)
        examples = list(unique.values())
    duplicates = read_count - len(examples)
    rows, counts = tokenize_examples(examples, tokenizer, template, config)
    if not rows:
        raise PrivtuneError("no usable examples left after filtering", source=str(files[0]),
                            hint=f"max_length is {config.max_length}; raise it or use --set overlength=truncate")

    staging = workspace.stage("dataset", artifact_id)
    by_split = {name: [] for name in SPLITS}
    for example, ids, mask in rows:
        key = _content_key(example)
        by_split[split_of(key, config.seed, config.validation_fraction, config.test_fraction)].append(
            (example, ids, mask))
    if not by_split["train"]:
        raise PrivtuneError("the train split is empty; add records or lower the validation/test fractions")
    write_tokenized(staging.path, by_split)
    for name, split_rows in by_split.items():
        _write_jsonl(staging.path / f"{name}.jsonl", [example for example, _, _ in split_rows])
    if rejected:
        _write_jsonl(staging.path / "rejected.jsonl", rejected)
    write_atomic(staging.path / "chat_template.jinja", template)
    lengths = [len(ids) for _, ids, _ in rows]
    stats = {
        "records_read": read_count + len(rejected), "rejected": len(rejected), "duplicates": duplicates,
        **counts, "examples": len(rows), "splits": {k: len(v) for k, v in by_split.items()},
        "tokens": sum(lengths), "trained_tokens": sum(sum(m) for _, _, m in rows),
        "length_percentiles": _percentiles(lengths),
    }
    manifest = {
        "stage": "prep", "parents": parents, "inputs": inputs, "formats": formats,
        "config": config_dict(config), "seed": config.seed, "metrics": stats,
        "model": model_ref.location, "tokenizer_fingerprint": fingerprint,
    }
    return staging.finish(manifest), False


def write_tokenized(folder: Path, by_split: dict[str, list]) -> None:
    """One Parquet file per split with `input_ids` and `assistant_masks`, as TRL reads them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "tokenized").mkdir(exist_ok=True)
    for name, split_rows in by_split.items():
        table = pa.table({"input_ids": [ids for _, ids, _ in split_rows],
                          "assistant_masks": [mask for _, _, mask in split_rows]},
                         schema=pa.schema([("input_ids", pa.list_(pa.int32())),
                                           ("assistant_masks", pa.list_(pa.int8()))]))
        pq.write_table(table, folder / "tokenized" / f"{name}.parquet")


def summary_rows(artifact: Artifact) -> list[tuple[str, str]]:
    """What the user should see after prep: counts and what was dropped."""
    m = artifact.manifest["metrics"]
    p = m.get("length_percentiles", {})
    return [
        ("records read", str(m["records_read"])), ("rejected (bad)", str(m["rejected"])),
        ("exact duplicates removed", str(m["duplicates"])), ("over max_length dropped", str(m["overlength_dropped"])),
        ("truncated", str(m["truncated"])), ("examples kept", str(m["examples"])),
        ("train / validation / test", " / ".join(str(m["splits"][s]) for s in SPLITS)),
        ("tokens (trained)", f"{m['tokens']} ({m['trained_tokens']})"),
        ("length p50 / p90 / p99 / max", f"{p.get('p50')} / {p.get('p90')} / {p.get('p99')} / {p.get('max')}"),
    ]
