"""Each known format normalises to the one schema; mappings rename columns."""

import json

import pytest

from privtune.data.formats import RawRecord, detect_format, normalize, read_records
from privtune.data.prep import PrepConfig, load_examples
from tests.conftest import FORMATS


def roles(example):
    return [(m["role"], m["train"]) for m in example["messages"]]


@pytest.mark.parametrize("name, fmt, count", [
    ("alpaca.jsonl", "alpaca", 3), ("openai.jsonl", "openai", 2), ("sharegpt.json", "sharegpt", 2),
    ("prompt_completion.csv", "prompt_completion", 2), ("dolly.jsonl", "dolly", 2),
])
def test_each_format_is_detected_and_normalised(name, fmt, count):
    examples, rejected, formats = load_examples([FORMATS / name], PrepConfig())
    assert formats == {str(FORMATS / name): fmt}
    assert len(examples) == count and not rejected
    for example in examples:
        assert example["messages"][-1] == {**example["messages"][-1], "role": "assistant", "train": True}
        assert all(m["content"] for m in example["messages"])
        assert example["meta"]["format"] == fmt


def test_alpaca_joins_instruction_and_input():
    examples, _, _ = load_examples([FORMATS / "alpaca.jsonl"], PrepConfig())
    assert examples[0]["messages"][0]["content"] == "Classify the ticket.\n\nI was charged twice."
    assert examples[1]["messages"][0]["content"] == "Say hello."


def test_openai_weight_zero_is_not_trained():
    examples, _, _ = load_examples([FORMATS / "openai.jsonl"], PrepConfig())
    assert roles(examples[1]) == [("user", False), ("assistant", False), ("user", False), ("assistant", True)]
    assert roles(examples[0])[0] == ("system", False)


def test_sharegpt_roles_map_to_schema_roles():
    examples, _, _ = load_examples([FORMATS / "sharegpt.json"], PrepConfig())
    assert roles(examples[1]) == [("system", False), ("user", False), ("assistant", True)]


def test_parquet_is_read_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FORMATS / "dolly.jsonl").read_text().splitlines()]
    path = tmp_path / "dolly.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = list(read_records(path))
    assert [r.line for r in records] == [1, 2]
    assert detect_format(records[0]) == "dolly"
    assert normalize(records[0], "dolly")["messages"][0]["content"].endswith("wrong address.")


def test_field_mapping_reads_other_column_names():
    config = PrepConfig(format="alpaca", map={"instruction": "question", "output": "answer"})
    examples, _, _ = load_examples([FORMATS / "mapped.csv"], config)
    assert examples[0]["messages"][1]["content"] == "Use the reset link on the login page."
    assert examples[0]["meta"]["line"] == 2  # CSV line 1 is the header


def test_conversation_ending_on_user_turn_is_rejected():
    record = RawRecord({"messages": [{"role": "user", "content": "hi"}]}, "x.jsonl", 4)
    with pytest.raises(Exception) as info:
        normalize(record, "openai")
    assert info.value.line == 4 and info.value.field == "messages[0].role"
