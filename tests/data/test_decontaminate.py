"""Decontamination: train examples sharing a word n-gram with held-out data are counted (report) or removed
(drop) from both the jsonl and the tokenized split; wording every example shares is not a leak."""

import json

import pyarrow.parquet as pq
import pytest

from privtune.data import prep
from privtune.data.decontaminate import HeldOutNgrams, example_text, ngrams
from privtune.errors import PrivtuneError

INSTRUCTION = "Classify the support ticket below and answer with its category in one word."
TOPICS = ("my invoice from march lists a charge twice for the premium plan",
          "the mobile app closes every time I open the settings screen on android",
          "please add a dark theme to the reports page for night shifts",
          "the parcel with order number forty two never arrived at our office",
          "I cannot reset my password because the email link has expired already",
          "our team would like a yearly billing option with a discount for nonprofits")


def records(copies: int = 12) -> list[dict]:
    """Each topic asked `copies` times in other words around it: near-duplicates that a hash split scatters
    over train and test, as templated records do."""
    greetings = ("Hi", "Hello team", "Good morning", "Hey", "Dear support", "Hi there")
    endings = ("Thanks.", "Please help.", "This is urgent.", "Any news?", "Regards.", "Cheers.")
    return [{"instruction": INSTRUCTION, "input": f"{greetings[i % 6]}, {topic}. {endings[(i // 6) % 6]} #{i}",
             "output": f"label {t}"} for t, topic in enumerate(TOPICS) for i in range(copies)]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def split_rows(artifact, split):
    return [json.loads(line) for line in (artifact.path / f"{split}.jsonl").read_text().splitlines()]


def in_topic(example: dict) -> bool:
    return any(topic in example["messages"][0]["content"] for topic in TOPICS)


def topic_of(example: dict) -> str:
    return next(topic for topic in TOPICS if topic in example["messages"][0]["content"])


def test_ngrams_stay_inside_a_paragraph():
    assert ngrams("a b c\n\nd e f", 2) == {("a", "b"), ("b", "c"), ("d", "e"), ("e", "f")}
    text = example_text({"messages": [{"role": "user", "content": "one two"}, {"role": "assistant", "content": "three"}]})
    assert ngrams(text, 2) == {("one", "two")}


def test_wording_most_held_out_examples_share_is_boilerplate_not_a_leak():
    held_out = HeldOutNgrams([f"classify this ticket please now {word} {i}" for i, word in enumerate("abcdefghij")],
                             n=3, boilerplate_share=0.5)
    assert ("classify", "this", "ticket") not in held_out.grams and held_out.boilerplate == 3
    assert ("now", "c", "2") in held_out.grams


def test_report_counts_overlap_and_keeps_every_example(tmp_path, tiny_model, workspace):
    data = write(tmp_path / "tickets.jsonl", records())
    plain, _ = prep.run([data], str(tiny_model), prep.PrepConfig(), workspace)
    reported, _ = prep.run([data], str(tiny_model), prep.PrepConfig(decontaminate="report"), workspace)
    found = reported.manifest["metrics"]["decontamination"]
    assert reported.manifest["metrics"]["splits"] == plain.manifest["metrics"]["splits"]
    assert found["checked"] == plain.manifest["metrics"]["splits"]["train"]
    assert 0 < found["contaminated"] <= found["checked"] and found["dropped"] == 0
    listed = [json.loads(line) for line in (reported.path / "decontaminated.jsonl").read_text().splitlines()]
    assert len(listed) == found["contaminated"]
    held_out_topics = {topic_of(r) for s in ("validation", "test") for r in split_rows(reported, s)}
    assert all(topic_of(row["example"]) in held_out_topics for row in listed)  # each a real near-duplicate
    assert any(dict(rows)["decontamination"].startswith(f"{found['contaminated']} of ")
               for rows in [prep.summary_rows(reported)])


def test_drop_removes_overlapping_train_examples_from_jsonl_and_tokens(tmp_path, tiny_model, workspace):
    unique = [{"instruction": INSTRUCTION, "input": f"Question number {i}", "output": "other"} for i in range(20)]
    data = write(tmp_path / "tickets.jsonl", records() + unique)
    plain, _ = prep.run([data], str(tiny_model), prep.PrepConfig(test_fraction=0.2), workspace)
    artifact, _ = prep.run([data], str(tiny_model), prep.PrepConfig(decontaminate="drop", decontaminate_ngram=6,
                                                                     test_fraction=0.2), workspace)
    metrics = artifact.manifest["metrics"]
    found = metrics["decontamination"]
    train = split_rows(artifact, "train")
    assert found["dropped"] == found["contaminated"] > 0
    assert len(train) == metrics["splits"]["train"] == found["checked"] - found["dropped"]
    assert pq.read_table(artifact.path / "tokenized" / "train.parquet").num_rows == len(train)
    held_out_topics = {topic_of(r) for s in ("validation", "test") for r in split_rows(artifact, s) if in_topic(r)}
    assert held_out_topics and not held_out_topics & {topic_of(r) for r in train if in_topic(r)}
    assert sum(not in_topic(r) for r in train) == sum(not in_topic(r) for r in split_rows(plain, "train")) > 0
    assert metrics["examples"] == sum(metrics["splits"].values())


def test_drop_against_another_eval_file(tmp_path, tiny_model, workspace):
    rows = records(copies=1)
    evaluation = write(tmp_path / "eval.jsonl", [{**rows[2], "input": "Yo, " + rows[2]["input"]}])
    data = write(tmp_path / "tickets.jsonl", rows)
    config = prep.PrepConfig(decontaminate="drop", decontaminate_against=[str(evaluation)],
                             validation_fraction=0, test_fraction=0)
    artifact, _ = prep.run([data], str(tiny_model), config, workspace)
    assert artifact.manifest["metrics"]["decontamination"]["dropped"] == 1
    evaluation.write_text(evaluation.read_text().replace("Yo, ", "Hey, "))  # other eval data: another dataset
    again, reused = prep.run([data], str(tiny_model), config, workspace)
    assert not reused and again.id != artifact.id
    assert rows[2]["input"] not in {r["messages"][0]["content"].split("\n\n")[-1] for r in split_rows(artifact, "train")}


def test_preference_dataset_is_decontaminated_by_its_prompt(tmp_path, tiny_model, workspace):
    pairs = [{"prompt": f"{g}, {topic}?", "chosen": "yes", "rejected": "no"}
             for topic in TOPICS for g in ("Hi", "Hello", "Hey", "So", "Well", "Now", "Then", "Ok")]
    pairs += [{"prompt": f"Ok, question {i}?", "chosen": "yes", "rejected": "no"} for i in range(30)]
    artifact, _ = prep.run([write(tmp_path / "pairs.jsonl", pairs)], str(tiny_model),
                           prep.PrepConfig(decontaminate="drop", test_fraction=0.3, validation_fraction=0), workspace)
    found = artifact.manifest["metrics"]["decontamination"]
    topics = lambda split: {r["prompt"][0]["content"].split(", ", 1)[1] for r in split_rows(artifact, split)} - {
        f"question {i}?" for i in range(30)}
    assert found["dropped"] > 0 and topics("test") and not topics("test") & topics("train")


def test_bad_settings_are_named(tmp_path, tiny_model, workspace):
    with pytest.raises(ValueError, match="only with decontaminate=report or drop"):
        prep.PrepConfig(decontaminate_against=["eval.jsonl"])
    with pytest.raises(ValueError, match="must be at least 1"):
        prep.PrepConfig(decontaminate="report", decontaminate_ngram=0)
    data = write(tmp_path / "tickets.jsonl", records(copies=1))
    with pytest.raises(PrivtuneError, match="no such file") as error:
        prep.run([data], str(tiny_model), prep.PrepConfig(decontaminate="drop", decontaminate_against=[
            str(tmp_path / "missing.jsonl")]), workspace)
    assert error.value.field == "decontaminate_against"


def test_the_demo_tickets_overlap_their_held_out_split(tiny_model, workspace):
    """The README's figure: the demo's templated tickets, most of whose train examples a held-out ticket repeats
    in other words."""
    from tests.conftest import ROOT

    artifact, _ = prep.run([ROOT / "data" / "tickets.jsonl"], str(tiny_model), prep.PrepConfig(decontaminate="report"),
                           workspace)
    found = artifact.manifest["metrics"]["decontamination"]
    assert (found["contaminated"], found["checked"], found["held_out_examples"]) == (314, 495, 105)
