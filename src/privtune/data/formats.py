"""Read records from JSONL/JSON/CSV/Parquet and normalise every known format to one schema.

The schema, shared by prep, generate, train and eval:
    {"messages": [{"role": "system"|"user"|"assistant", "content": str, "train": bool}, ...],
     "meta": {"source": file, "line": n, "format": name}}
`train` is false for turns the model should not learn from (prompts, OpenAI `weight: 0`).
Every error names the file, the line (or CSV/Parquet row) and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from privtune.errors import PrivtuneError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user",
                  "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant"}
FORMATS = ("openai", "sharegpt", "alpaca", "dolly", "prompt_completion")


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
            try:
                yield RawRecord(json.loads(text), str(path), number)
            except json.JSONDecodeError as exc:
                raise PrivtuneError(f"malformed JSON: {exc.msg} (column {exc.colno})", source=str(path),
                                    line=number) from None


def _read_json(path: Path) -> Iterator[RawRecord]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise PrivtuneError("invalid UTF-8", source=str(path), line=line) from None
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PrivtuneError(f"malformed JSON: {exc.msg} (column {exc.colno})", source=str(path),
                            line=exc.lineno) from None
    if isinstance(data, dict):  # {"data": [...]} or a single record
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        data = lists[0] if len(lists) == 1 and "messages" not in data and "conversations" not in data else [data]
    if not isinstance(data, list):
        raise PrivtuneError("expected a JSON array of records", source=str(path), line=1)
    # Line numbers of array elements are not kept by json; point at the element index instead.
    for index, item in enumerate(data):
        yield RawRecord(item, f"{path}[{index}]", index + 1)


def _read_table(path: Path, kind: str) -> Iterator[RawRecord]:
    from datasets import Dataset

    try:
        if kind == "csv":
            text = path.read_bytes()
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PrivtuneError("invalid UTF-8", source=str(path),
                                    line=text[: exc.start].count(b"\n") + 1) from None
            table = Dataset.from_csv(str(path), keep_in_memory=True, keep_default_na=False)
        else:
            table = Dataset.from_parquet(str(path), keep_in_memory=True)
    except PrivtuneError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors have many types
        raise PrivtuneError(f"cannot parse {kind.upper()}: {str(exc).splitlines()[0]}", source=str(path)) from None
    first_row = 2 if kind == "csv" else 1  # CSV line 1 is the header
    for index, row in enumerate(table):
        yield RawRecord(row, str(path), index + first_row)


READERS: dict[str, Callable[[Path], Iterator[RawRecord]]] = {
    ".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json,
    ".csv": lambda p: _read_table(p, "csv"), ".parquet": lambda p: _read_table(p, "parquet"),
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


def detect_format(record: RawRecord) -> str:
    """The format of a record, from its keys."""
    data = record.data
    if not isinstance(data, dict):
        raise _fail(record, None, f"expected a JSON object, got {type(data).__name__}")
    keys = set(data)
    if "messages" in keys:
        return "openai"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "instruction" in keys and "response" in keys:
        return "dolly"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    raise _fail(record, None, f"cannot tell the format from the fields {sorted(keys)}")


def _text(record: RawRecord, data: dict, field: str, *, required: bool = True, label: str | None = None) -> str:
    label = label or field
    value = data.get(field)
    if value is None:
        if required:
            raise _fail(record, label, "missing")
        return ""
    if not isinstance(value, str):
        raise _fail(record, label, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _fail(record, label, "empty")
    return value


def _turns(record: RawRecord, items: Any, field: str, role_key: str, text_key: str,
           roles: dict[str, str]) -> list[dict]:
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
        content = _text(record, turn, text_key, label=f"{where}.{text_key}")
        train = True
        if "weight" in turn:
            if turn["weight"] not in (0, 1) or isinstance(turn["weight"], bool):
                raise _fail(record, f"{where}.weight", f"expected 0 or 1, got {turn['weight']!r}")
            train = turn["weight"] == 1
        role = roles[raw_role]
        messages.append({"role": role, "content": content, "train": role == "assistant" and train})
    return messages


def _check_conversation(record: RawRecord, messages: list[dict], field: str) -> list[dict]:
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        raise _fail(record, f"{field}[{roles.index('system', 1)}].role", "a system turn may only come first")
    if roles[-1] != "assistant":
        raise _fail(record, f"{field}[{len(roles) - 1}].role",
                    "the conversation ends on a user turn; it must end with an assistant reply")
    if not any(m["train"] for m in messages):
        raise _fail(record, field, "no assistant turn to train on (all have weight 0)")
    return messages


def _single_turn(user: str, assistant: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system, "train": False}] if system else []
    return messages + [{"role": "user", "content": user, "train": False},
                       {"role": "assistant", "content": assistant, "train": True}]


def normalize(record: RawRecord, fmt: str) -> dict:
    """One record in format `fmt` as a schema example, or a BadRecord naming the field."""
    data = record.data
    if not isinstance(data, dict):
        raise _fail(record, None, f"expected a JSON object, got {type(data).__name__}")
    if fmt == "openai":
        messages = _turns(record, data.get("messages"), "messages", "role", "content", {r: r for r in ROLES})
        messages = _check_conversation(record, messages, "messages")
    elif fmt == "sharegpt":
        messages = _turns(record, data.get("conversations"), "conversations", "from", "value", SHAREGPT_ROLES)
        messages = _check_conversation(record, messages, "conversations")
    elif fmt == "alpaca":
        instruction = _text(record, data, "instruction")
        extra = _text(record, data, "input", required=False)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = _single_turn(user, _text(record, data, "output"), data.get("system") or None)
    elif fmt == "dolly":
        instruction = _text(record, data, "instruction")
        context = _text(record, data, "context", required=False)
        user = f"{instruction}\n\n{context}" if context.strip() else instruction
        messages = _single_turn(user, _text(record, data, "response"))
    elif fmt == "prompt_completion":
        messages = _single_turn(_text(record, data, "prompt"), _text(record, data, "completion"))
    else:
        raise PrivtuneError(f"unknown format '{fmt}'", field="--format", hint=f"one of: auto, {', '.join(FORMATS)}")
    return {"messages": messages, "meta": {"source": record.source, "line": record.line, "format": fmt}}
