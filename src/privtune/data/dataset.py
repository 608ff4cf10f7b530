"""Schema examples -> a tokenized, split dataset folder: what prep and generate both write and train reads.

Owned by no stage: prep feeds it a team's records, generate a teacher's answers. Examples stream
through (dedup keys in SQLite on disk, lengths in a histogram, splits appended as they come), so
memory does not grow with the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Literal

from privtune.artifacts import write_atomic
from pydantic import Field, field_validator, model_validator

from privtune.config import CommaList, Config, ConfigValueError
from privtune.data.formats import (BadRecord, apply_mapping, detect_format, format_names, normalize, odd_shapes,
                                   read_records)
from privtune.data.render import render_with_spans, tokenize_with_masks
from privtune.errors import PrivtuneError
from privtune.ui import track

SPLITS = ("train", "validation", "test")


class DatasetSettings(Config):
    """How examples become a dataset (chat template, length limit, splits, dedup): prep and generate both
    write theirs with these."""

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
    decontaminate: Literal["off", "report", "drop"] = "off"
    """Train examples sharing a word n-gram with held-out data (the validation and test splits, and
    `decontaminate_against`): report counts them (and lists them in decontaminated.jsonl), drop removes them."""
    decontaminate_ngram: int = 8
    """Words in an n-gram; shorter n-grams find more overlap, and more of it by chance."""
    decontaminate_boilerplate: float = 0.5
    """An n-gram in at least this share of the held-out examples, or of the train examples (and in 3 or more),
    is the task's shared wording (an instruction every record repeats), not a leak, and is ignored."""
    decontaminate_against: CommaList = Field(default_factory=list)
    """More eval data, as files in any prep format (e.g. the set `privtune eval --data` will use)."""

    @model_validator(mode="after")
    def check(self):
        if self.max_length < 8:
            raise ConfigValueError("max_length", f"must be at least 8, got {self.max_length}")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ConfigValueError(name, f"must be in [0, 0.5), got {getattr(self, name)}")
        if self.decontaminate_ngram < 1:
            raise ConfigValueError("decontaminate_ngram", f"must be at least 1, got {self.decontaminate_ngram}")
        if not 0 < self.decontaminate_boilerplate <= 1:
            raise ConfigValueError("decontaminate_boilerplate", f"must be in (0, 1], got {self.decontaminate_boilerplate}")
        if self.decontaminate_against and self.decontaminate == "off":
            raise ConfigValueError("decontaminate_against", "is used only with decontaminate=report or drop")
        return self


class PrepConfig(DatasetSettings):
    """The dataset settings plus how to read the user's files."""

    format: str = "auto"
    """Input format (a module of privtune/data/record_formats); `auto` detects it from the first record's fields."""
    map: dict[str, str] = Field(default_factory=dict)
    """Schema field <- source column, e.g. {instruction: question, output: answer}."""
    skip_bad: bool = False
    """Keep going past bad records, writing them with reasons to rejected.jsonl."""

    @field_validator("format")
    @classmethod
    def known_format(cls, value: str) -> str:
        """A str checked against the registry rather than a Literal, so a new format file needs no edit here."""
        known = ["auto", *format_names()]
        if value not in known:
            raise ConfigValueError("format", f"expected one of {', '.join(map(repr, known))}, got {value!r}")
        return value


class Rejects:
    """Bad records kept for review (--skip-bad): streamed to `path` (rejected.jsonl) so memory stays
    flat, or kept in `rows` when there is no path (small files read whole)."""

    def __init__(self, path: Path | None = None):
        self.path, self.count, self.rows, self._handle = path, 0, [], None

    def add(self, error: PrivtuneError, record) -> None:
        self.count += 1
        row = {"source": error.source, "line": error.line, "field": error.field, "error": error.message,
               "record": record}
        if self.path is None:
            self.rows.append(row)
            return
        if self._handle is None:
            self._handle = open(self.path, "w", encoding="utf-8")
        self._handle.write(json.dumps(row, ensure_ascii=False, default=repr) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def iter_examples(files: list[Path], config: PrepConfig, rejects: Rejects,
                  formats: dict[str, str]) -> Iterator[dict]:
    """Read and normalise records one at a time; fills `formats` (file -> format) as it goes."""
    for path in files:
        fmt = None if config.format == "auto" else config.format
        for record in read_records(path):
            try:
                record = apply_mapping(record, config.map)
                if fmt is None:
                    fmt = detect_format(record)
                    formats[str(path)] = fmt
                yield normalize(record, fmt)
            except BadRecord as exc:
                if not config.skip_bad:
                    raise
                rejects.add(exc, record.data)
        formats.setdefault(str(path), fmt or config.format)


def load_examples(files: list[Path], config: PrepConfig) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Every record of small files in memory (seed files, tests): examples, rejected records, formats."""
    rejects, formats = Rejects(), {}
    examples = list(iter_examples(files, config, rejects, formats))
    return examples, rejects.rows, formats


def content_key(example: dict) -> str:
    """Identity of a conversation (roles, texts, train flags), for dedup and the split."""
    parts = [f"{m['role']}\x1f{int(m['train'])}\x1f{m['content']}" for m in example["messages"]]
    return hashlib.sha1("\x1e".join(parts).encode()).hexdigest()


def refused_by_template(example: dict, message: str, source: str) -> BadRecord:
    """The bad record for an example the chat template refused, named by the file and line it came from."""
    meta = example.get("meta", {})
    return BadRecord(f"the chat template refused this conversation: {message}", source=meta.get("source", source),
                     line=meta.get("line"), field="template")


def split_of(key: str, seed: int, validation_fraction: float, test_fraction: float) -> str:
    """A deterministic split from the content hash: adding records never moves existing ones."""
    point = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if point < test_fraction:
        return "test"
    if point < test_fraction + validation_fraction:
        return "validation"
    return "train"


def _percentiles(histogram: "np.ndarray") -> dict[str, int]:
    """Length percentiles from a histogram of lengths: exact, in memory that does not grow with the data."""
    import numpy as np

    total = int(histogram.sum())
    if not total:
        return {}
    cumulative = np.cumsum(histogram)
    at = lambda index: int(np.searchsorted(cumulative, index + 1))  # the length at this sorted position
    pick = lambda q: at(min(total - 1, int(q * total)))
    return {"min": at(0), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": at(total - 1)}


CHUNK = 2048
PARALLEL_AFTER = 4  # chunks: below this much work, worker processes cost more than they save


def _encode_chunk(conversations: list[list[dict]], tokenizer, template: str):
    """Token ids, masks and lengths of a chunk, and {index: message} for conversations the chat
    template refused (a template may `raise_exception`, e.g. when roles do not alternate)."""
    from jinja2 import TemplateError

    errors: dict[int, str] = {}
    try:
        texts, spans = render_with_spans(tokenizer, template, conversations)
    except TemplateError:  # find which conversations the template refuses, one at a time
        texts, spans = [], []
        for n, conversation in enumerate(conversations):
            try:
                (text,), (span,) = render_with_spans(tokenizer, template, [conversation])
            except TemplateError as exc:
                errors[n], text, span = str(exc) or type(exc).__name__, "", []
            texts.append(text)
            spans.append(span)
    return (*tokenize_with_masks(tokenizer, texts, spans), errors)


_held: tuple = ()  # set only inside pool workers (by `_hold`), never in the calling process


def _hold(tokenizer, template: str) -> None:
    """Pool initializer: each worker keeps the tokenizer it was forked with, so chunks do not carry it."""
    global _held
    _held = (tokenizer, template)


def _encode_in_worker(conversations: list[list[dict]]):
    return _encode_chunk(conversations, *_held)


def encode_stream(chunks: Iterable[list], tokenizer, template: str) -> Iterator[tuple[list, tuple]]:
    """(chunk, encoded chunk) in order, for chunks of (key, example) pairs. Across processes once
    there is enough work; a few chunks in flight at most, so memory does not grow with the input."""
    chunks = iter(chunks)
    head = list(itertools.islice(chunks, PARALLEL_AFTER))
    workers = min(os.cpu_count() or 1, 4) if len(head) == PARALLEL_AFTER else 1
    chunks = itertools.chain(head, chunks)
    conversations = lambda chunk: [example["messages"] for _, example in chunk]
    if workers == 1:
        for chunk in chunks:
            yield chunk, _encode_chunk(conversations(chunk), tokenizer, template)
        return
    context = multiprocessing.get_context("fork")  # the tokenizer is inherited, not pickled
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_hold, initargs=(tokenizer, template)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_encode_in_worker, conversations(chunk))))
            if len(pending) > 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


class SeenKeys:
    """Content keys seen so far, for dedup, in an SQLite file: a set in memory would grow with the data."""

    def __init__(self, path: Path):
        import sqlite3

        self.path = path
        path.unlink(missing_ok=True)  # a killed run's file: its keys are not this run's (and unjournaled)
        with self._disk_errors():
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-32768;"
                                  "CREATE TABLE IF NOT EXISTS seen (key BLOB PRIMARY KEY) WITHOUT ROWID; BEGIN;")

    def add(self, key: str) -> bool:
        """True if `key` is new."""
        with self._disk_errors():
            return self.db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (bytes.fromhex(key),)).rowcount == 1

    @contextlib.contextmanager
    def _disk_errors(self):
        """SQLite reports a full disk as its own error, without the errno: name the file and the code."""
        import sqlite3

        try:
            yield
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorname", "")
            raise PrivtuneError(f"cannot write: {exc} ({code}): the disk or the file size limit is full",
                                source=str(self.path), hint="free space, then re-run the same command") from None

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "SeenKeys":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SplitWriters:
    """Each split's examples (`<split>.jsonl`) and token ids and masks (`tokenized/<split>.parquet`,
    the columns TRL reads), appended as examples arrive, in row groups of `group_rows`."""

    def __init__(self, folder: Path, group_rows: int = 8192):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("assistant_masks", pa.list_(pa.int8()))])
        (folder / "tokenized").mkdir(exist_ok=True)
        self.group_rows = group_rows
        self.counts = dict.fromkeys(SPLITS, 0)
        self.pending: dict[str, list] = {name: [] for name in SPLITS}
        with contextlib.ExitStack() as opened:  # if one cannot be opened, the ones before it are closed
            self.jsonl = {name: opened.enter_context(open(folder / f"{name}.jsonl", "w", encoding="utf-8"))
                          for name in SPLITS}
            self.parquet = {name: opened.enter_context(pq.ParquetWriter(folder / "tokenized" / f"{name}.parquet",
                                                                         self.schema)) for name in SPLITS}
            self._files = opened.pop_all()

    def add(self, split: str, example: dict, ids, mask) -> None:
        self.jsonl[split].write(json.dumps(example, ensure_ascii=False) + "\n")
        self.pending[split].append((ids.copy(), mask.copy()))  # a view would keep its whole chunk alive
        self.counts[split] += 1
        if len(self.pending[split]) >= self.group_rows:
            self._flush(split)

    def _flush(self, split: str) -> None:
        import numpy as np
        import pyarrow as pa

        rows, self.pending[split] = self.pending[split], []
        if not rows:
            return
        offsets = pa.array(np.concatenate([[0], np.cumsum([len(ids) for ids, _ in rows])]), pa.int32())
        self.parquet[split].write_table(pa.table({
            "input_ids": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate([i for i, _ in rows]), pa.int32())),
            "assistant_masks": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate([m for _, m in rows]),
                                                                          pa.int8())),
        }, schema=self.schema))

    def close(self) -> None:
        """Write what is pending, then close every file (all of them, even if a write fails)."""
        with self._files:
            for name in SPLITS:
                self._flush(name)

    def __enter__(self) -> "SplitWriters":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_dataset(folder: Path, examples: Iterable[dict], tokenizer, template: str, config: DatasetSettings,
                  source: str, rejects: Rejects | None = None) -> dict:
    """Dedup, tokenize, length-filter and split schema examples into `folder`; returns the stats.

    Shared by prep and generate, so both write the same dataset layout that train reads. Examples
    stream through: dedup keys live on disk, lengths in a histogram, output is appended.
    A conversation the chat template refuses is a bad record (kept in `rejects` when given: prep's
    --skip-bad).
    """
    import numpy as np

    counts = dict.fromkeys(("records_read", "duplicates", "overlength_dropped", "truncated", "nothing_to_train",
                            "template_rejected", "starts_with_assistant", "repeated_role"), 0)
    histogram = np.zeros(config.max_length + 1, np.int64)
    tokens = trained_tokens = 0
    seen: SeenKeys | None = None

    def unique() -> Iterator[tuple[str, dict]]:
        for example in examples:
            counts["records_read"] += 1
            key = content_key(example)
            if seen is not None and not seen.add(key):
                counts["duplicates"] += 1
                continue
            for shape in odd_shapes(example["messages"]):
                counts[shape] += 1
            yield key, example

    def chunked(items: Iterator) -> Iterator[list]:
        while chunk := list(itertools.islice(items, CHUNK)):
            yield chunk

    with contextlib.ExitStack() as files:  # the dedup file and the writers are closed whatever happens
        seen = files.enter_context(SeenKeys(folder / ".seen.sqlite")) if config.dedup else None
        writers = files.enter_context(SplitWriters(folder))
        for chunk, (ids, mask, lengths, errors) in track(encode_stream(chunked(unique()), tokenizer, template),
                                                         "tokenizing"):
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for n, (key, example) in enumerate(chunk):
                if n in errors:
                    error = refused_by_template(example, errors[n], source)
                    if rejects is None:
                        raise error
                    counts["template_rejected"] += 1
                    rejects.add(error, example)
                    continue
                start, end = int(offsets[n]), int(offsets[n + 1])
                if end - start > config.max_length:
                    if config.overlength == "drop":
                        counts["overlength_dropped"] += 1
                        continue
                    counts["truncated"] += 1
                    end = start + config.max_length
                if not mask[start:end].any():
                    counts["nothing_to_train"] += 1
                    continue
                split = split_of(key, config.seed, config.validation_fraction, config.test_fraction)
                writers.add(split, example, ids[start:end], mask[start:end])
                histogram[end - start] += 1
                tokens += end - start
                trained_tokens += int(mask[start:end].sum())
    kept = sum(writers.counts.values())
    if not kept:
        raise PrivtuneError("no usable examples left after filtering", source=source,
                            hint=f"max_length is {config.max_length}; raise it or use --set overlength=truncate")
    if not writers.counts["train"]:
        raise PrivtuneError("the train split is empty; add records or lower the validation/test fractions",
                            source=source)
    write_atomic(folder / "chat_template.jinja", template)
    stats = {**counts, "rejected": 0, "examples": kept, "splits": dict(writers.counts), "tokens": tokens,
             "trained_tokens": trained_tokens, "length_percentiles": _percentiles(histogram)}
    return with_decontamination(folder, config, stats)


def with_decontamination(folder: Path, config: DatasetSettings, stats: dict) -> dict:
    """The dataset's stats after decontamination (when asked for): counts of what was found and dropped."""
    if config.decontaminate == "off":
        return stats
    from privtune.data.decontaminate import decontaminate

    found = decontaminate(folder, config)
    if found["dropped"] and found["dropped"] == stats["splits"]["train"]:
        raise PrivtuneError("decontamination dropped every train example", field="decontaminate",
                            hint="check decontaminated.jsonl; raise decontaminate_ngram, lower decontaminate_boilerplate "
                                 "or use decontaminate=report")
    stats["splits"] = {**stats["splits"], "train": stats["splits"]["train"] - found["dropped"]}
    stats["examples"] -= found["dropped"]
    if "tokens" in stats:
        stats["tokens"] -= found["dropped_tokens"]
        stats["trained_tokens"] -= found["dropped_trained_tokens"]
    return {**stats, "decontamination": found}


def drop_rows(folder: Path, split: str, rows: set[int]) -> tuple[int, int]:
    """Rewrite a split without `rows` (indices into its jsonl, which tokenized/<split>.parquet follows row for
    row), each file as temp file + rename; the tokens the dropped rows held, and of those the trained ones."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not rows:
        return 0, 0
    lines = (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    write_atomic(folder / f"{split}.jsonl", "".join(line + "\n" for i, line in enumerate(lines) if i not in rows))
    path = folder / "tokenized" / f"{split}.parquet"
    if not path.exists():
        return 0, 0
    table = pq.read_table(path)
    keep = pa.array([i not in rows for i in range(table.num_rows)])
    dropped = table.filter(pc.invert(keep))
    tokens = pc.sum(pc.list_value_length(dropped.column("input_ids"))).as_py() or 0
    trained = pc.sum(pc.list_flatten(dropped.column("assistant_masks"))).as_py() or 0
    temporary = path.with_suffix(".parquet.tmp")
    pq.write_table(table.filter(keep), temporary)
    os.replace(temporary, path)
    return int(tokens), int(trained)
