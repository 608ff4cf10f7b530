"""`privtune prep`: artifacts, masks, splits, found-again runs, bad input and interruption."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from privtune.data import prep
from tests.conftest import FORMATS


def test_prep_writes_a_complete_artifact(tiny_model, workspace):
    artifact, found = prep.run([FORMATS / "alpaca.jsonl", FORMATS / "openai.jsonl"], str(tiny_model),
                               prep.PrepConfig(validation_fraction=0.0, test_fraction=0.0), workspace)
    assert not found and artifact.manifest["status"] == "complete"
    metrics = artifact.manifest["metrics"]
    assert metrics["records_read"] == 5 and metrics["duplicates"] == 1 and metrics["examples"] == 4
    assert metrics["splits"] == {"train": 4, "validation": 0, "test": 0}
    assert [i["sha256"] for i in artifact.manifest["inputs"]] and artifact.manifest["tokenizer_fingerprint"]
    assert len((artifact.path / "train.jsonl").read_text().splitlines()) == 4
    assert not list(workspace.root.glob(".staging/*"))


def test_mask_covers_assistant_replies_and_the_end_of_turn_token(tiny_model, workspace):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    artifact, _ = prep.run([FORMATS / "openai.jsonl"], str(tiny_model),
                           prep.PrepConfig(validation_fraction=0.0, test_fraction=0.0), workspace)
    rows = pq.read_table(artifact.path / "tokenized" / "train.parquet").to_pylist()
    trained = {tokenizer.decode([t for t, m in zip(r["input_ids"], r["assistant_masks"]) if m]) for r in rows}
    # weight 0 on the first reply of the second conversation: only the last reply is trained
    assert trained == {"It ships today.<|im_end|>", "Refund started.<|im_end|>"}


def test_split_is_deterministic_and_seeded(tiny_model, workspace, tmp_path):
    records = tmp_path / "many.jsonl"
    records.write_text("".join(json.dumps({"prompt": f"ticket {i}", "completion": f"label {i % 3}"}) + "\n"
                               for i in range(200)))
    first, _ = prep.run([records], str(tiny_model), prep.PrepConfig(), workspace)
    again, found = prep.run([records], str(tiny_model), prep.PrepConfig(), workspace, force=True)
    other, _ = prep.run([records], str(tiny_model), prep.PrepConfig(seed=1), workspace)
    read = lambda a, s: (a.path / f"{s}.jsonl").read_text()
    assert not found and read(first, "test") == read(again, "test")
    assert read(first, "test") != read(other, "test")
    splits = first.manifest["metrics"]["splits"]
    assert sum(splits.values()) == 200 and 5 <= splits["test"] <= 40 and 5 <= splits["validation"] <= 40


def test_second_identical_prep_is_found_not_recomputed(tiny_model, workspace, cli):
    args = ["prep", "--data", FORMATS / "dolly.jsonl", "--model", tiny_model, "--workspace", workspace.root]
    code, out = cli(*args)
    assert code == 0, out
    code, again = cli(*args)
    assert code == 0 and "found an identical dataset" in again
    assert out.strip().splitlines()[-1] == again.strip().splitlines()[-1]  # same artifact path
    assert len(workspace.artifacts()) == 1


def test_overlength_examples_are_dropped_or_truncated(tiny_model, workspace):
    config = prep.PrepConfig(validation_fraction=0.0, test_fraction=0.0)
    full, _ = prep.run([FORMATS / "openai.jsonl"], str(tiny_model), config, workspace)
    lengths = full.manifest["metrics"]["length_percentiles"]
    config.max_length = (lengths["min"] + lengths["max"]) // 2
    dropped, _ = prep.run([FORMATS / "openai.jsonl"], str(tiny_model), config, workspace)
    assert dropped.manifest["metrics"]["overlength_dropped"] == 1
    assert dropped.manifest["metrics"]["examples"] == 1
    config.overlength = "truncate"
    cut, _ = prep.run([FORMATS / "openai.jsonl"], str(tiny_model), config, workspace)
    assert cut.manifest["metrics"]["truncated"] == 1
    assert cut.manifest["metrics"]["length_percentiles"]["max"] == config.max_length


BAD_INPUTS = [
    # (file name, content, expected line, expected field or None, words in the message)
    ("malformed.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n', 2, None, "malformed JSON"),
    ("missing.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a", "input": "x"}\n', 2, "output", "missing"),
    ("empty_field.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "  ", "output": "b"}\n', 2, "instruction", "empty"),
    ("wrong_type.jsonl", '{"prompt": "a", "completion": 3}\n', 1, "completion", "expected a string"),
    ("unknown_role.jsonl", '{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}\n', 1, "messages[1].role", "unknown role"),
    ("ends_on_user.jsonl", '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}\n', 1, "messages[1].role", "ends on a user turn"),
    ("bad_utf8.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff\xfe", "completion": "b"}\n', 2, None, "invalid UTF-8"),
    ("empty.jsonl", "", None, None, "file is empty"),
    ("blank.jsonl", "\n\n", None, None, "no records"),
    ("not_object.jsonl", '["a", "b"]\n', 1, None, "expected a JSON object"),
    ("bad_weight.jsonl", '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 2}]}\n', 1, "messages[1].weight", "expected 0 or 1"),
    ("turns_not_list.jsonl", '{"conversations": "hello"}\n', 1, "conversations", "expected a list"),
    ("missing_column.csv", "prompt,answer\nhi,there\n", 2, None, "cannot tell"),
    ("late_system.jsonl", '{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]}\n', 1, "messages[1].role", "system turn"),
    ("broken.json", '[{"prompt": "a", "completion": "b"},\n {"prompt": }]', 2, None, "malformed JSON"),
]


@pytest.mark.parametrize("name, content, line, field, words", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_line_field_and_writes_nothing(name, content, line, field, words, tiny_model,
                                                            workspace, cli, tmp_path):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out = cli("prep", "--data", path, "--model", tiny_model, "--workspace", workspace.root)
    assert code == 2
    assert "Traceback" not in out
    expected_location = f"{path}:{line}" if line else str(path)
    assert expected_location in out.replace("\n", "")
    if field:
        assert f"field '{field}'" in out
    assert words in out
    assert workspace.artifacts() == []


def test_skip_bad_keeps_rejected_rows_with_reasons(tiny_model, workspace, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": ""}\n'
                    '{"prompt": "d", "completion": "e"}\n')
    artifact, _ = prep.run([path], str(tiny_model), prep.PrepConfig(skip_bad=True, validation_fraction=0,
                                                                    test_fraction=0), workspace)
    rejected = [json.loads(l) for l in (artifact.path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"], r["error"]) for r in rejected] == [(2, "completion", "empty")]
    assert artifact.manifest["metrics"]["examples"] == 2


def test_model_path_that_does_not_exist(workspace, cli):
    code, out = cli("prep", "--data", FORMATS / "alpaca.jsonl", "--model", "./no/such/model",
                    "--workspace", workspace.root)
    assert code == 2 and "model path does not exist" in out and "--model" in out


def test_killed_prep_leaves_nothing_that_looks_finished(tiny_model, tmp_path):
    """A real kill -9 mid-run: no finished artifact appears; the same command then completes."""
    records = tmp_path / "big.jsonl"
    records.write_text("".join(json.dumps({"instruction": f"Classify ticket {i}", "input": "x " * (i % 50),
                                           "output": "billing"}) + "\n" for i in range(30000)))
    workspace = tmp_path / "runs"
    command = [sys.executable, "-m", "privtune", "prep", "--data", str(records), "--model", str(tiny_model),
               "--workspace", str(workspace)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while not list(workspace.glob(".staging/dataset-*/tokenized")) and time.time() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not [p for p in workspace.iterdir() if (p / "manifest.json").exists() and not p.name.startswith(".")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    finished = [p for p in workspace.iterdir() if p.name.startswith("dataset-")]
    assert len(finished) == 1
    assert json.loads((finished[0] / "manifest.json").read_text())["metrics"]["examples"] == 30000


BAD = FORMATS.parent / "bad"


def test_skip_bad_rejects_what_the_chat_template_refuses(tiny_model, workspace):
    """A template's raise_exception (roles must alternate) rejects that record with the template's words."""
    config = prep.PrepConfig(skip_bad=True, template=str(BAD / "alternating.jinja"), validation_fraction=0,
                             test_fraction=0)
    artifact, _ = prep.run([BAD / "repeated_roles.jsonl"], str(tiny_model), config, workspace)
    rejected = [json.loads(line) for line in (artifact.path / "rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejected] == [(2, "template")]
    assert "roles must alternate" in rejected[0]["error"]
    metrics = artifact.manifest["metrics"]
    assert (metrics["records_read"], metrics["rejected"], metrics["examples"]) == (2, 1, 1)


def test_csv_records_are_numbered_by_the_physical_line_they_start_on(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text('prompt,completion\n"a\nb\nc",x\nd,y\n"e,f",z\n')
    examples, _, _ = prep.load_examples([path], prep.PrepConfig())
    assert [e["meta"]["line"] for e in examples] == [2, 5, 6]
    assert examples[0]["messages"][0]["content"] == "a\nb\nc" and examples[2]["messages"][0]["content"] == "e,f"


def test_odd_conversation_shapes_and_untrainable_examples_are_shown(tiny_model, workspace, cli, tmp_path):
    path = tmp_path / "odd.jsonl"
    turn = lambda role, text, **extra: {"role": role, "content": text, **extra}
    rows = [[turn("assistant", "Hi, how can I help?"), turn("user", "refund"), turn("assistant", "Done.")],
            [turn("user", "a"), turn("user", "b"), turn("assistant", "c")],
            [turn("user", "fine"), turn("assistant", "yes")]]
    path.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
    code, out = cli("prep", "--data", path, "--model", tiny_model, "--workspace", workspace.root,
                    "--set", "validation_fraction=0", "--set", "test_fraction=0", "--set", "max_length=12",
                    "--set", "overlength=truncate")
    assert code == 0, out
    metrics = workspace.artifacts()[0].manifest["metrics"]
    assert (metrics["starts_with_assistant"], metrics["repeated_role"]) == (1, 1)
    assert metrics["nothing_to_train"] >= 1  # truncated to 12 tokens: the reply is cut off entirely
    flat = " ".join(out.split())
    assert "conversations starting with the assistant │ 1" in flat and "role twice in a row │ 1" in flat
    assert f"nothing to train (dropped) │ {metrics['nothing_to_train']}" in flat
