"""Every malformed input in tests/data/bad/ (and a few bad CLI values) through the command that reads it.

Each must: exit non-zero, name the file and line/row (or the flag) and the field or key, print no
Python traceback, and leave nothing half-written in the workspace.
"""

from pathlib import Path

import pytest

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
TEACHER = ["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "t"]  # never reached: input fails first

# (case, command, where the message must point, field or key it must name, words it must contain)
CASES = [
    ("truncated", ["prep", "--data", "{bad}/truncated.jsonl"], "{bad}/truncated.jsonl:2", None, "malformed JSON"),
    ("wrong type", ["prep", "--data", "{bad}/wrong_type.jsonl"], "{bad}/wrong_type.jsonl:2", "completion", "expected a string"),
    ("missing field", ["prep", "--data", "{bad}/missing_field.jsonl"], "{bad}/missing_field.jsonl:2", "output", "missing"),
    ("empty string", ["prep", "--data", "{bad}/empty_string.jsonl"], "{bad}/empty_string.jsonl:2", "instruction", "empty"),
    ("unknown role", ["prep", "--data", "{bad}/unknown_role.jsonl"], "{bad}/unknown_role.jsonl:1", "messages[1].role", "unknown role"),
    ("ends on user", ["prep", "--data", "{bad}/ends_on_user.jsonl"], "{bad}/ends_on_user.jsonl:1", "messages[2].role", "user turn"),
    ("BOM and CRLF", ["prep", "--data", "{bad}/bom_crlf.jsonl"], "{bad}/bom_crlf.jsonl:3", "output", "missing"),
    ("invalid UTF-8", ["prep", "--data", "{bad}/invalid_utf8.jsonl"], "{bad}/invalid_utf8.jsonl:2", None, "invalid UTF-8"),
    ("not an object", ["prep", "--data", "{bad}/not_object.jsonl"], "{bad}/not_object.jsonl:2", None, "JSON object"),
    ("bad weight", ["prep", "--data", "{bad}/bad_weight.jsonl"], "{bad}/bad_weight.jsonl:1", "messages[1].weight", "0 or 1"),
    ("turns not a list", ["prep", "--data", "{bad}/turns_not_list.json"], "{bad}/turns_not_list.json[1]:2", "conversations", "list"),
    ("late system turn", ["prep", "--data", "{bad}/late_system.jsonl"], "{bad}/late_system.jsonl:1", "messages[1].role", "system"),
    ("broken JSON array", ["prep", "--data", "{bad}/broken.json"], "{bad}/broken.json:2", None, "malformed JSON"),
    ("CSV missing column", ["prep", "--data", "{bad}/missing_column.csv"], "{bad}/missing_column.csv:3", None, "column"),
    ("empty file", ["prep", "--data", "{bad}/empty.jsonl"], "{bad}/empty.jsonl", None, "empty"),
    ("10 MB single line", ["prep", "--data", "{tmp}/long_line.jsonl"], "{tmp}/long_line.jsonl:1", None, "malformed JSON"),
    ("map to a missing column", ["prep", "--data", "{bad}/missing_field.jsonl", "--map", "prompt=question"],
     "{bad}/missing_field.jsonl:1", "question", "missing"),
    ("model path missing", ["prep", "--data", "{bad}/missing_field.jsonl", "--model", "./no/such/model"],
     None, "--model", "does not exist"),
    ("seed without instruction", ["generate", "--seeds", "{bad}/seeds_missing_instruction.jsonl", *TEACHER],
     "{bad}/seeds_missing_instruction.jsonl:2", "instruction", "missing"),
    ("seed without instances", ["generate", "--seeds", "{bad}/seeds_empty_instances.jsonl", *TEACHER],
     "{bad}/seeds_empty_instances.jsonl:1", "instances", "non-empty list"),
    ("truncated seeds", ["generate", "--seeds", "{bad}/seeds_truncated.jsonl", *TEACHER],
     "{bad}/seeds_truncated.jsonl:3", None, "malformed JSON"),
    ("document not UTF-8", ["generate", "--docs", "{bad}/docs_bad_utf8", *TEACHER],
     "{bad}/docs_bad_utf8/notes.txt:2", None, "invalid UTF-8"),
    ("no documents", ["generate", "--docs", "{bad}/docs_empty", *TEACHER], "{bad}/docs_empty", "--docs", "no documents"),
    ("zero concurrency", ["generate", "--seeds", "{bad}/truncated.jsonl", "--concurrency", "0", *TEACHER],
     "command line", "concurrency", "at least 1"),
    ("recipe unknown key", ["train", "--data", "x", "--recipe", "{bad}/recipe_unknown_key.yaml"],
     "{bad}/recipe_unknown_key.yaml:3", "epochz", "unknown"),
    ("negative learning rate", ["train", "--data", "x", "--recipe", "{bad}/recipe_negative_lr.yaml"],
     "{bad}/recipe_negative_lr.yaml:3", "learning_rate", "positive"),
    ("recipe wrong type", ["train", "--data", "x", "--recipe", "{bad}/recipe_wrong_type.yaml"],
     "{bad}/recipe_wrong_type.yaml:2", "epochs", "expected float"),
    ("recipe bad YAML", ["train", "--data", "x", "--recipe", "{bad}/recipe_bad_yaml.yaml"],
     "{bad}/recipe_bad_yaml.yaml:4", None, "YAML"),
    ("recipe unknown method", ["train", "--data", "x", "--recipe", "{bad}/recipe_unknown_method.yaml"],
     "{bad}/recipe_unknown_method.yaml:1", "method", "ppo"),
    ("--set negative learning rate", ["train", "--data", "x", "--set", "learning_rate=-1"],
     "--set", "learning_rate", "positive"),
    ("train on a missing dataset", ["train", "--data", "no-such-dataset"], None, "--data", "no-such-dataset"),
    ("eval a missing model", ["eval", "--model", "./no/such/model"], None, "--model", "does not exist"),
    ("GGUF that is not one", ["prep", "--data", "{bad}/../formats/alpaca.jsonl", "--model", "{bad}/not_a_model.gguf"],
     "{bad}/not_a_model.gguf", "--model", "not a readable GGUF"),
    ("import a non-GGUF file", ["import", "{bad}/truncated.jsonl"], "{bad}/truncated.jsonl", "GGUF", "not a .gguf"),
    ("lone surrogate", ["prep", "--data", "{bad}/lone_surrogate.jsonl"], "{bad}/lone_surrogate.jsonl:2",
     "instruction", "lone surrogate"),
    ("JSON nested 200,000 deep", ["prep", "--data", "{tmp}/deep.jsonl"], "{tmp}/deep.jsonl:2", None, "nested too deeply"),
    ("Alpaca system is an object", ["prep", "--data", "{bad}/system_object.jsonl"], "{bad}/system_object.jsonl:2",
     "system", "expected a string"),
    ("system-only conversation", ["prep", "--data", "{bad}/system_only.jsonl"], "{bad}/system_only.jsonl:1",
     "messages", "only a system turn"),
    ("chat template raises", ["prep", "--data", "{bad}/repeated_roles.jsonl", "--template", "{bad}/alternating.jinja"],
     "{bad}/repeated_roles.jsonl:2", "template", "roles must alternate"),
    ("CSV row on a later physical line", ["prep", "--data", "{bad}/multiline_row.csv"], "{bad}/multiline_row.csv:5",
     None, "header has 3 columns"),
    ("--set learning_rate=.nan", ["train", "--data", "x", "--set", "learning_rate=.nan"], "--set", "learning_rate",
     "finite"),
    ("recipe epochs: .inf", ["train", "--data", "x", "--recipe", "{bad}/recipe_inf_epochs.yaml"],
     "{bad}/recipe_inf_epochs.yaml:3", "epochs", "finite"),
    ("recipe duplicate key", ["train", "--data", "x", "--recipe", "{bad}/recipe_duplicate_key.yaml"],
     "{bad}/recipe_duplicate_key.yaml:4", "learning_rate", "duplicate key"),
    ("serve port out of range", ["serve", "x", "--port", "99999", "--name", "--model"], None, "--port", "65535"),  # --model given: none appended
]


@pytest.fixture(scope="module")
def long_line(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    (folder / "long_line.jsonl").write_text('{"instruction": "' + "x" * 10_000_000 + '", "output": \n')
    (folder / "deep.jsonl").write_text('{"instruction": "a", "output": "b"}\n' + "[" * 200_000 + "]" * 200_000 + "\n")
    return folder


@pytest.mark.parametrize("case, command, where, field, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clean_error(case, command, where, field, words, cli, tiny_model, workspace, long_line):
    fill = lambda text: text.format(bad=BAD, tmp=long_line)
    args = [fill(a) for a in command]
    if "--model" not in args and args[0] not in ("eval", "import"):
        args += ["--model", str(tiny_model)]
    code, out = cli(*args, "--workspace", workspace.root)
    flat = out.replace("\n", "")
    assert code != 0, out
    assert "Traceback" not in out and len(out) < 5_000, out[:2_000]
    if where:
        assert fill(where) in flat, out
    if field:
        assert f"'{field}'" in flat or field in flat, out
    assert words in flat, out
    written = [p for p in workspace.root.rglob("*") if p.is_file()] if workspace.root.exists() else []
    assert written == [], written
