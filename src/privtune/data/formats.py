"""Read records from JSONL/JSON/CSV/Parquet and normalise every known format to one schema.

Each format is one module of `privtune.data.record_formats` naming a `Format`; this module holds the
readers, detection and the helpers those modules share, so adding a format is adding one file.

The schema, shared by prep, generate, train and eval:
    {"messages": [{"role": "system"|"user"|"assistant", "content": str, "train": bool}, ...],
     "meta": {"source": file, "line": n, "format": name}}
`train` is false for turns the model should not learn from (prompts, OpenAI `weight: 0`).
Preference formats (a Format with `examples="preference"`) give instead
    {"prompt": [messages], "chosen": [assistant messages], "rejected": [assistant messages], "meta"}
and unpaired ones (KTO, `examples="unpaired"`) {"prompt": [...], "completion": [...], "label": bool, "meta"}.
Every error names the file, the line (or CSV/Parquet row) and the field.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from privtune import registry
from privtune.errors import PrivtuneError

ROLES = ("system", "user", "assistant")
PACKAGE = "privtune.data.record_formats"


@dataclass
class RawRecord:
    """One record as read from a file, with where it came from."""

    data: Any
    source: str
    line: int


class BadRecord(PrivtuneError):
    """A record that cannot be used; carries the record so --skip-bad can keep it for review."""


def _fail(record: RawRecord, field: str | None, message: str) -> BadRecord:
    return BadRecord(message, source=record.source, line=record.line, field=field)


# ---------------------------------------------------------------- reading

def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PrivtuneError(f"invalid UTF-8 at byte {exc.start} of the line", source=str(path),
                                    line=number, hint="re-encode the file as UTF-8") from None
            if not text.strip():
                continue
            yield RawRecord(_parse_json(text, str(path), number), str(path), number)


def _parse_json(text: str, source: str, line: int | None) -> Any:
    """json.loads with errors that name the place: `line` for one JSONL line, None for a whole file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PrivtuneError(f"malformed JSON: {exc.msg} (column {exc.colno})", source=source,
                            line=line or exc.lineno) from None
    except RecursionError:  # the parser recurses per level: `[[[[...` 200,000 deep
        raise PrivtuneError("malformed JSON: nested too deeply", source=source, line=line or 1) from None


def _read_json(path: Path) -> Iterator[RawRecord]:
    """A JSON array is parsed whole (the standard library has no streaming parser): JSONL, CSV and
    Parquet stream, so a large dataset belongs in one of those."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise PrivtuneError("invalid UTF-8", source=str(path), line=line) from None
    if not text.strip():
        return
    data = _parse_json(text, str(path), None)
    if isinstance(data, dict):  # {"data": [...]} or a single record
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        data = lists[0] if len(lists) == 1 and "messages" not in data and "conversations" not in data else [data]
    if not isinstance(data, list):
        raise PrivtuneError("expected a JSON array of records", source=str(path), line=1)
    # Line numbers of array elements are not kept by json; point at the element index instead.
    for index, item in enumerate(data):
        yield RawRecord(item, f"{path}[{index}]", index + 1)


CSV_FIELD_LIMIT = 64 << 20  # characters; the csv module's default (128 KiB) rejects long documents
csv.field_size_limit(CSV_FIELD_LIMIT)


def _read_csv(path: Path) -> Iterator[RawRecord]:
    """Rows of a CSV file, streamed, each numbered by the physical line it starts on: a quoted field
    may span lines, and the user's editor shows the line, not the row count. Every value is a string."""
    def lines() -> Iterator[str]:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise PrivtuneError("invalid UTF-8", source=str(path), line=number,
                                        hint="re-encode the file as UTF-8") from None

    reader = csv.reader(lines())
    header, start = None, 1
    try:
        for row in reader:
            if not row:
                start = reader.line_num + 1
                continue
            if header is None:
                header = row
            elif len(row) != len(header):
                raise PrivtuneError(f"row has {len(row)} fields but the header has {len(header)} columns "
                                    f"({', '.join(header)})", source=str(path), line=start)
            else:
                yield RawRecord(dict(zip(header, row)), str(path), start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise PrivtuneError(f"cannot parse CSV: {exc}", source=str(path), line=reader.line_num) from None


def _read_parquet(path: Path, batch_rows: int = 1024) -> Iterator[RawRecord]:
    """Rows of a Parquet file, a batch at a time, numbered from 1."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as table:
            number = 0
            for batch in table.iter_batches(batch_size=batch_rows):
                for row in batch.to_pylist():
                    number += 1
                    yield RawRecord(row, str(path), number)
    except PrivtuneError:
        raise
    except Exception as exc:  # pyarrow's errors have many types
        raise PrivtuneError(f"cannot parse Parquet: {str(exc).splitlines()[0]}", source=str(path)) from None


READERS: dict[str, Callable[[Path], Iterator[RawRecord]]] = {
    ".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json,
    ".csv": _read_csv, ".parquet": _read_parquet,
}


def read_records(path: Path) -> Iterator[RawRecord]:
    """Every record of a file; an unreadable or empty file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise PrivtuneError("no such file", source=str(path), field="--data")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise PrivtuneError(f"unknown file type '{path.suffix}'", source=str(path),
                            hint="use .jsonl, .json, .csv or .parquet")
    if path.stat().st_size == 0:
        raise PrivtuneError("file is empty", source=str(path))
    count = 0
    for record in reader(path):
        count += 1
        yield record
    if count == 0:
        raise PrivtuneError("file has no records", source=str(path))


# ---------------------------------------------------------------- formats

def apply_mapping(record: RawRecord, mapping: dict[str, str]) -> RawRecord:
    """Rename source columns to schema names: `{"instruction": "question"}` reads `question`."""
    if not mapping or not isinstance(record.data, dict):
        return record
    data = dict(record.data)
    for target, column in mapping.items():
        if column not in data:
            raise _fail(record, column, f"column '{column}' (mapped to '{target}') is missing")
        data[target] = data.pop(column)
    return RawRecord(data, record.source, record.line)


@dataclass(frozen=True)
class Format:
    """A record format: the keys that identify a record as one, and how it becomes schema messages."""

    name: str
    keys: frozenset[str]
    """Fields every record of this format has; detection picks the format from them."""
    normalize: Callable[[RawRecord, dict], list[dict]]
    """(record, its fields) -> schema messages, or a BadRecord naming the field."""
    description: str
    order: int = 0
    """Position in lists and help, and which of two matching formats detection prefers."""
    examples: str = "sft"
    """What a record becomes: sft (a conversation), preference (prompt, chosen, rejected) or unpaired
    (prompt, completion, label): the kind of dataset prep writes, and the methods that can train on it."""


def formats() -> dict[str, Format]:
    return registry.entries(PACKAGE, "FORMAT")


def format_names() -> list[str]:
    return list(formats())


def pick_format(keys: Iterable[str], candidates: Iterable[Format]) -> Format | None:
    """The format a record with `keys` is in: of those whose keys it has, the most specific (a format
    whose keys extend another's, as KTO's prompt+completion+label extends prompt+completion, wins);
    the first in `candidates` among unrelated ones."""
    keys = set(keys)
    matches = [f for f in candidates if f.keys <= keys]
    return next((f for f in matches if not any(f.keys < other.keys for other in matches)), None)


def detect_format(record: RawRecord) -> str:
    """The format of a record, from its keys."""
    data = record.data
    if not isinstance(data, dict):
        raise _fail(record, None, f"expected a JSON object, got {type(data).__name__}")
    found = pick_format(data, formats().values())
    if found is None:
        raise _fail(record, None, f"cannot tell the format from the fields {sorted(data)}")
    return found.name


def text_field(record: RawRecord, data: dict, field: str, *, required: bool = True,
               label: str | None = None) -> str:
    """A string field; `label` names it in errors when it sits inside a turn."""
    label = label or field
    value = data.get(field)
    if value is None:
        if required:
            raise _fail(record, label, "missing")
        return ""
    if not isinstance(value, str):
        raise _fail(record, label, f"expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON allows "\ud83d" alone; no tokenizer or file can hold it
        raise _fail(record, label, f"not valid Unicode: a lone surrogate {value[exc.start]!r} at character "
                                   f"{exc.start}") from None
    if required and not value.strip():
        raise _fail(record, label, "empty")
    return value


def turns(record: RawRecord, items: Any, field: str, role_key: str, text_key: str,
          roles: dict[str, str]) -> list[dict]:
    """A list of turns as schema messages; `roles` maps the source's role names to the schema's."""
    if not isinstance(items, list):
        raise _fail(record, field, f"expected a list of turns, got {type(items).__name__}")
    if not items:
        raise _fail(record, field, "empty conversation")
    messages = []
    for index, turn in enumerate(items):
        where = f"{field}[{index}]"
        if not isinstance(turn, dict):
            raise _fail(record, where, f"expected an object, got {type(turn).__name__}")
        raw_role = turn.get(role_key)
        if raw_role is None:
            raise _fail(record, f"{where}.{role_key}", "missing")
        if raw_role not in roles:
            raise _fail(record, f"{where}.{role_key}",
                        f"unknown role {raw_role!r}; expected one of {', '.join(sorted(set(roles)))}")
        content = text_field(record, turn, text_key, label=f"{where}.{text_key}")
        train = True
        if "weight" in turn:
            if turn["weight"] not in (0, 1) or isinstance(turn["weight"], bool):
                raise _fail(record, f"{where}.weight", f"expected 0 or 1, got {turn['weight']!r}")
            train = turn["weight"] == 1
        role = roles[raw_role]
        messages.append({"role": role, "content": content, "train": role == "assistant" and train})
    return messages


def check_conversation(record: RawRecord, messages: list[dict], field: str) -> list[dict]:
    """A conversation that can train: a system turn only first, an assistant reply last and trained."""
    roles = [m["role"] for m in messages]
    if set(roles) == {"system"}:
        raise _fail(record, field, "the conversation has only a system turn; it needs a user turn and an "
                                   "assistant reply")
    if "system" in roles[1:]:
        raise _fail(record, f"{field}[{roles.index('system', 1)}].role", "a system turn may only come first")
    if roles[-1] != "assistant":
        raise _fail(record, f"{field}[{len(roles) - 1}].role",
                    "the conversation ends on a user turn; it must end with an assistant reply")
    if not any(m["train"] for m in messages):
        raise _fail(record, field, "no assistant turn to train on (all have weight 0)")
    return messages


def single_turn(user: str, assistant: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system, "train": False}] if system else []
    return messages + [{"role": "user", "content": user, "train": False},
                       {"role": "assistant", "content": assistant, "train": True}]


def normalize(record: RawRecord, fmt: str) -> dict:
    """One record in format `fmt` as a schema example, or a BadRecord naming the field."""
    data = record.data
    if not isinstance(data, dict):
        raise _fail(record, None, f"expected a JSON object, got {type(data).__name__}")
    known = formats()
    if fmt not in known:
        raise PrivtuneError(f"unknown format '{fmt}'", field="--format", hint=f"one of: auto, {', '.join(known)}")
    normalized = known[fmt].normalize(record, data)
    meta = {"source": record.source, "line": record.line, "format": fmt}
    if known[fmt].examples == "sft":
        return {"messages": normalized, "meta": meta}
    return {**normalized, "meta": meta}


def examples_kind(example: dict) -> str:
    """sft, preference or unpaired: what a normalized example holds."""
    return "sft" if "messages" in example else "preference" if "chosen" in example else "unpaired"


# ---------------------------------------------------------------- preference records

def prompt_turns(record: RawRecord, data: dict, field: str) -> list[dict]:
    """A prompt: a string (one user turn) or a list of turns ({role, content}) that ends on a user turn."""
    value = data.get(field)
    if isinstance(value, list):
        messages = turns(record, value, field, "role", "content", {r: r for r in ROLES})
        if messages[-1]["role"] != "user":
            raise _fail(record, f"{field}[{len(messages) - 1}].role", "the prompt must end on a user turn")
        return [{**m, "train": False} for m in messages]
    return [{"role": "user", "content": text_field(record, data, field), "train": False}]


def answer_turns(record: RawRecord, data: dict, field: str) -> list[dict]:
    """An answer: a string, or a list of turns that holds one assistant turn ({role: assistant, content})."""
    value = data.get(field)
    if isinstance(value, list):
        messages = turns(record, value, field, "role", "content", {"assistant": "assistant"})
        if len(messages) != 1:
            raise _fail(record, field, f"expected one assistant turn, got {len(messages)}")
        return messages
    return [{"role": "assistant", "content": text_field(record, data, field), "train": True}]


def preference_pair(record: RawRecord, prompt: list[dict], chosen: list[dict], rejected: list[dict],
                    field: str = "rejected") -> dict:
    """A preference example; a pair whose two answers are the same teaches nothing and is a bad record."""
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        raise _fail(record, field, "the chosen and rejected answers are the same")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def odd_shapes(messages: list[dict]) -> list[str]:
    """Conversation shapes that train but are often a data mistake: the first turn after the system
    prompt is the assistant's, or one role speaks twice in a row. Prep counts them and warns."""
    roles = [m["role"] for m in messages if m["role"] != "system"]
    shapes = []
    if roles and roles[0] == "assistant":
        shapes.append("starts_with_assistant")
    if any(a == b for a, b in zip(roles, roles[1:])):
        shapes.append("repeated_role")
    return shapes
