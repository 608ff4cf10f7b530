"""Preference records in the formats people have (TRL, OpenAI preference, HH, UltraFeedback, KTO): each
detected and normalized to prompt/chosen/rejected (or prompt/completion/label), each bad input named by
file, line and field, and prep writing a preference dataset whose splits follow the prompt."""

import json

import pytest

from privtune.data import prep
from privtune.data.formats import BadRecord, RawRecord, detect_format, normalize
from privtune.errors import PrivtuneError

USER = {"role": "user", "content": "Is the sky green?", "train": False}
YES = {"role": "assistant", "content": "No, it is blue.", "train": True}
NO = {"role": "assistant", "content": "Yes.", "train": True}

GOOD = {
    "trl_preference": {"prompt": "Is the sky green?", "chosen": "No, it is blue.", "rejected": "Yes."},
    "trl_preference (turns)": {"prompt": [{"role": "user", "content": "Is the sky green?"}],
                               "chosen": [{"role": "assistant", "content": "No, it is blue."}],
                               "rejected": [{"role": "assistant", "content": "Yes."}]},
    "openai_preference": {"input": {"messages": [{"role": "user", "content": "Is the sky green?"}]},
                          "preferred_output": [{"role": "assistant", "content": "No, it is blue."}],
                          "non_preferred_output": [{"role": "assistant", "content": "Yes."}]},
    "hh": {"chosen": "\n\nHuman: Is the sky green?\n\nAssistant: No, it is blue.",
           "rejected": "\n\nHuman: Is the sky green?\n\nAssistant: Yes."},
    "ultrafeedback": {"prompt": "Is the sky green?", "completions": [
        {"response": "Maybe.", "overall_score": 3}, {"response": "No, it is blue.", "overall_score": 9},
        {"response": "Yes.", "overall_score": 1}]},
}


@pytest.mark.parametrize("case", list(GOOD))
def test_each_preference_format_is_detected_and_gives_the_same_pair(case):
    record = RawRecord(GOOD[case], "pairs.jsonl", 3)
    fmt = detect_format(record)
    assert fmt == case.split()[0]
    example = normalize(record, fmt)
    assert (example["prompt"], example["chosen"], example["rejected"]) == ([USER], [YES], [NO])
    assert example["meta"] == {"source": "pairs.jsonl", "line": 3, "format": fmt}


def test_kto_records_are_unpaired_with_a_label_and_csv_strings_count():
    for label, expected in ((True, True), (False, False), ("false", False), ("TRUE", True)):
        example = normalize(RawRecord({"prompt": "Is the sky green?", "completion": "Yes.", "label": label}, "k.csv",
                                      2), "kto")
        assert example["prompt"] == [USER] and example["completion"] == [NO] and example["label"] is expected
    assert detect_format(RawRecord({"prompt": "a", "completion": "b", "label": True}, "k", 1)) == "kto"


BAD = [
    ("trl_preference", {"prompt": "q", "chosen": "same", "rejected": "same "}, "rejected", "are the same"),
    ("trl_preference", {"prompt": "q", "chosen": 3, "rejected": "b"}, "chosen", "expected a string"),
    ("trl_preference", {"prompt": [{"role": "assistant", "content": "q"}], "chosen": "a", "rejected": "b"},
     "prompt[0].role", "end on a user turn"),
    ("trl_preference", {"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "chosen[0].role", "unknown role"),
    ("openai_preference", {"input": "q", "preferred_output": [], "non_preferred_output": []}, "input",
     "expected an object"),
    ("openai_preference", {"input": {"messages": []}, "preferred_output": [{"role": "assistant", "content": "a"}],
                           "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "input.messages",
     "empty conversation"),
    ("hh", {"chosen": "Human: hi there", "rejected": "\n\nHuman: hi\n\nAssistant: no"}, "chosen",
     "expected '\\n\\nHuman"),
    ("hh", {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: bye\n\nAssistant: no"}, "rejected",
     "differ before"),
    ("ultrafeedback", {"prompt": "q", "completions": [{"response": "a", "overall_score": 2}]}, "completions",
     "at least 2"),
    ("ultrafeedback", {"prompt": "q", "completions": [{"response": "a", "overall_score": 2},
                                                      {"response": "b", "overall_score": "high"}]},
     "completions[1].overall_score", "numeric score"),
    ("ultrafeedback", {"prompt": "q", "completions": [{"response": "a", "score": 4}, {"response": "b", "score": 4}]},
     "completions", "same score"),
    ("kto", {"prompt": "q", "completion": "a", "label": "maybe"}, "label", "true or false"),
    ("kto", {"prompt": "q", "completion": "", "label": True}, "completion", "empty"),
]


@pytest.mark.parametrize("fmt, data, field, message", BAD)
def test_bad_preference_records_name_the_file_line_and_field(fmt, data, field, message):
    with pytest.raises(BadRecord) as caught:
        normalize(RawRecord(data, "pairs.jsonl", 7), fmt)
    error = caught.value
    assert (error.source, error.line, error.field) == ("pairs.jsonl", 7, field)
    assert message in error.message


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_prep_writes_a_preference_dataset_split_by_prompt(tmp_path, tiny_model, workspace):
    records = [{"prompt": f"Question {i % 20}?", "chosen": f"Answer {i} in full.", "rejected": f"No {i}."}
               for i in range(60)]
    records.append(dict(records[0]))  # an exact duplicate
    artifact, _ = prep.run([write(tmp_path / "pairs.jsonl", records)], str(tiny_model),
                           prep.PrepConfig(validation_fraction=0.2, test_fraction=0.2), workspace)
    manifest = artifact.manifest
    assert manifest["examples"] == "preference" and manifest["formats"] == {str(tmp_path / "pairs.jsonl"): "trl_preference"}
    metrics = manifest["metrics"]
    assert metrics["duplicates"] == 1 and metrics["examples"] == 60 and sum(metrics["splits"].values()) == 60
    prompts = {}
    for split in ("train", "validation", "test"):
        for line in (artifact.path / f"{split}.jsonl").read_text().splitlines():
            prompts.setdefault(json.loads(line)["prompt"][0]["content"], set()).add(split)
    assert len(prompts) == 20 and all(len(splits) == 1 for splits in prompts.values())  # a prompt stays in one split
    assert (artifact.path / "chat_template.jinja").is_file()


def test_prep_drops_overlong_pairs_and_refuses_mixed_kinds(tmp_path, tiny_model, workspace):
    long = [{"prompt": "q", "chosen": "word " * 400, "rejected": "no"}] + [
        {"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(10)]
    artifact, _ = prep.run([write(tmp_path / "long.jsonl", long)], str(tiny_model),
                           prep.PrepConfig(max_length=64, validation_fraction=0, test_fraction=0), workspace)
    assert artifact.manifest["metrics"]["overlength_dropped"] == 1 and artifact.manifest["metrics"]["examples"] == 10
    pairs = write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    sft = write(tmp_path / "sft.jsonl", [{"instruction": "q", "output": "a"}])
    with pytest.raises(PrivtuneError) as caught:
        prep.run([pairs, sft], str(tiny_model), prep.PrepConfig(), workspace)
    error = caught.value
    assert "a record of kind sft (alpaca) among preference records" in error.message
    assert (error.source, error.line) == (str(sft), 1)
