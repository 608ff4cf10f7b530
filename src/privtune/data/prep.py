"""`privtune prep`: a team's own records -> a rendered, tokenized, split dataset artifact."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from privtune.artifacts import Artifact, Workspace, input_record, stable_hash, write_atomic
from privtune.config import ConfigValueError, config_dict
from privtune.data.formats import BadRecord, apply_mapping, detect_format, normalize, read_records
from privtune.data.render import choose_template, render_with_spans, tokenize_with_masks, tokenizer_fingerprint
from privtune.errors import PrivtuneError
from privtune.models.loading import load_tokenizer, resolve_model
from privtune.ui import track

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


def content_key(example: dict) -> str:
    """Identity of a conversation (roles, texts, train flags), for dedup and the split."""
    parts = [f"{m['role']}\x1f{int(m['train'])}\x1f{m['content']}" for m in example["messages"]]
    return hashlib.sha1("\x1e".join(parts).encode()).hexdigest()


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


_WORKER_STATE: tuple = ()
CHUNK = 2048


@dataclass
class Encoded:
    """Token ids and trained-token masks of many examples, as flat arrays plus offsets."""

    ids: "np.ndarray"
    mask: "np.ndarray"
    offsets: "np.ndarray"  # example n is ids[offsets[n]:offsets[n + 1]]

    def length(self, n: int) -> int:
        return int(self.offsets[n + 1] - self.offsets[n])


def _encode_chunk(conversations: list[list[dict]]):
    tokenizer, template = _WORKER_STATE
    texts, spans = render_with_spans(tokenizer, template, conversations)
    return tokenize_with_masks(tokenizer, texts, spans)


def encode_conversations(conversations: list[list[dict]], tokenizer, template: str,
                         workers: int | None = None) -> Encoded:
    """Render and tokenize in chunks, across processes when there is enough work to pay for them."""
    import numpy as np

    global _WORKER_STATE
    _WORKER_STATE = (tokenizer, template)
    chunks = [conversations[i: i + CHUNK] for i in range(0, len(conversations), CHUNK)]
    if workers is None:
        workers = min(len(chunks), os.cpu_count() or 1, 4) if len(conversations) >= 4 * CHUNK else 1
    if workers > 1:
        context = multiprocessing.get_context("fork")  # the tokenizer is inherited, not pickled
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(track(pool.map(_encode_chunk, chunks), "tokenizing", total=len(chunks)))
    else:
        results = [_encode_chunk(chunk) for chunk in track(chunks, "tokenizing")]
    if not results:
        return Encoded(np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(1, np.int64))
    lengths = np.concatenate([r[2] for r in results])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Encoded(np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]), offsets)


def select_examples(encoded: Encoded, config: PrepConfig) -> tuple[list[tuple[int, int, int]], dict]:
    """Apply max_length: (example index, start, end) of each kept example, and what was dropped or cut."""
    kept, counts = [], {"overlength_dropped": 0, "truncated": 0, "nothing_to_train": 0}
    for n in range(len(encoded.offsets) - 1):
        start, end = int(encoded.offsets[n]), int(encoded.offsets[n + 1])
        if end - start > config.max_length:
            if config.overlength == "drop":
                counts["overlength_dropped"] += 1
                continue
            counts["truncated"] += 1
            end = start + config.max_length
        if not encoded.mask[start:end].any():
            counts["nothing_to_train"] += 1
            continue
        kept.append((n, start, end))
    return kept, counts


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
    staging = workspace.stage("dataset", artifact_id)
    stats = write_dataset(staging.path, examples, tokenizer, template, config, source=str(files[0]))
    if rejected:
        _write_jsonl(staging.path / "rejected.jsonl", rejected)
    stats["records_read"] += len(rejected)
    stats["rejected"] = len(rejected)
    manifest = {
        "stage": "prep", "parents": parents, "inputs": inputs, "formats": formats,
        "config": config_dict(config), "seed": config.seed, "metrics": stats,
        "model": model_ref.location, "tokenizer_fingerprint": fingerprint,
    }
    return staging.finish(manifest), False


def write_dataset(folder: Path, examples: list[dict], tokenizer, template: str, config: PrepConfig,
                  source: str) -> dict:
    """Dedup, tokenize, length-filter and split schema examples into `folder`; returns the stats.

    Shared by prep and generate, so both write the same dataset layout that train reads.
    """
    keys = [content_key(example) for example in examples]
    read_count = len(examples)
    if config.dedup:
        first_of = {}
        for index, key in enumerate(keys):
            first_of.setdefault(key, index)
        examples, keys = [examples[i] for i in first_of.values()], list(first_of)
    encoded = encode_conversations([e["messages"] for e in examples], tokenizer, template)
    kept, counts = select_examples(encoded, config)
    if not kept:
        raise PrivtuneError("no usable examples left after filtering", source=source,
                            hint=f"max_length is {config.max_length}; raise it or use --set overlength=truncate")
    by_split: dict[str, list] = {name: [] for name in SPLITS}
    for item in kept:
        split = split_of(keys[item[0]], config.seed, config.validation_fraction, config.test_fraction)
        by_split[split].append(item)
    if not by_split["train"]:
        raise PrivtuneError("the train split is empty; add records or lower the validation/test fractions",
                            source=source)
    write_tokenized(folder, by_split, encoded)
    for name, items in by_split.items():
        _write_jsonl(folder / f"{name}.jsonl", [examples[n] for n, _, _ in items])
    write_atomic(folder / "chat_template.jinja", template)
    lengths = [end - start for _, start, end in kept]
    return {
        "records_read": read_count, "rejected": 0, "duplicates": read_count - len(examples), **counts,
        "examples": len(kept), "splits": {k: len(v) for k, v in by_split.items()}, "tokens": int(sum(lengths)),
        "trained_tokens": int(sum(int(encoded.mask[start:end].sum()) for _, start, end in kept)),
        "length_percentiles": _percentiles(lengths),
    }


def write_tokenized(folder: Path, by_split: dict[str, list], encoded: Encoded) -> None:
    """One Parquet file per split with `input_ids` and `assistant_masks`, the columns TRL reads."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "tokenized").mkdir(exist_ok=True)
    for name, items in by_split.items():
        starts = np.array([start for _, start, _ in items], dtype=np.int64)
        lengths = np.array([end - start for _, start, end in items], dtype=np.int64)
        ends = np.cumsum(lengths)
        index = np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(ends) else 0)
        offsets = pa.array(np.concatenate([[0], ends]), pa.int32())
        table = pa.table({
            "input_ids": pa.ListArray.from_arrays(offsets, pa.array(encoded.ids[index], pa.int32())),
            "assistant_masks": pa.ListArray.from_arrays(offsets, pa.array(encoded.mask[index], pa.int8())),
        })
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
