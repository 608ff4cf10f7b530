"""Decontamination: training examples that share word n-grams with held-out data, counted or dropped.

A gain in eval means little if the test examples were trained on in other words. After a dataset's
splits are written, every train example is checked against the n-grams of its own validation and test
splits and of any other eval files named (`decontaminate_against`). N-grams that appear in many
held-out examples, or in many train examples (the instruction every ticket shares), are the task's
boilerplate, not a leak, and are ignored; an example sharing any other n-gram is contaminated. The
dropped examples, each with the n-gram it shared, go to `decontaminated.jsonl` for review.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from privtune.artifacts import file_sha256, write_atomic
from privtune.data import dataset
from privtune.errors import PrivtuneError
from privtune.ui import track

REPORT = "decontaminated.jsonl"
WORD = re.compile(r"\w+")
PARAGRAPH = re.compile(r"\n\s*\n")
TEXT_FIELDS = ("messages", "prompt", "chosen", "rejected", "completion")


def example_text(example: dict) -> str:
    """Every message of an sft, preference or unpaired example, as one text, a blank line between messages."""
    return "\n\n".join(m["content"] for field in TEXT_FIELDS for m in example.get(field, []))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams within each paragraph: one never spans an instruction and its input, or a question and its
    answer, so the words where a shared template meets the content do not look like a leak."""
    grams = set()
    for paragraph in PARAGRAPH.split(text.lower()):
        words = WORD.findall(paragraph)
        grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return grams


class HeldOutNgrams:
    """The n-grams of held-out examples, less those shared by many of them (boilerplate)."""

    def __init__(self, texts, n: int, boilerplate_share: float):
        counts: dict[tuple, int] = {}
        self.examples = 0
        for text in texts:
            self.examples += 1
            for gram in ngrams(text, n):
                counts[gram] = counts.get(gram, 0) + 1
        limit = max(3, boilerplate_share * self.examples)
        self.grams = {gram for gram, count in counts.items() if count < limit}
        self.boilerplate = len(counts) - len(self.grams)
        self.n = n

    def common_in(self, train_grams: list[set], share: float) -> set:
        """Held-out n-grams that many train examples share too: the task's wording, which a small held-out
        set cannot show to be boilerplate by itself. They are no longer counted as leaks."""
        counts: dict[tuple, int] = {}
        for grams in train_grams:
            for gram in grams:
                counts[gram] = counts.get(gram, 0) + 1
        limit = max(3, share * len(train_grams))
        common = {gram for gram, count in counts.items() if count >= limit}
        self.grams -= common
        self.boilerplate += len(common)
        return common

def against_digest(settings) -> list[str]:
    """The contents of the eval files named in `decontaminate_against`, for an artifact's identity: changed eval
    data makes another dataset, not the one decontaminated against the old files."""
    return [file_sha256(Path(path)) for path in settings.decontaminate_against if Path(path).is_file()]


def held_out_texts(folder: Path, against: list[str]):
    """The texts of the dataset's own validation and test splits and of the named eval files (any prep format)."""
    from privtune.data.dataset import PrepConfig, load_examples

    for split in ("validation", "test"):
        for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            yield example_text(json.loads(line))
    if against:
        examples, _, _ = load_examples([Path(path) for path in against], PrepConfig())
        for example in examples:
            yield example_text(example)


def decontaminate(folder: Path, config) -> dict:
    """Check the written train split against the held-out data; in `drop` mode rewrite it without the
    contaminated examples (jsonl and, where there is one, the tokenized parquet). Returns the counts."""
    for path in config.decontaminate_against:
        if not Path(path).is_file():
            raise PrivtuneError("no such file", source=str(path), field="decontaminate_against")
    held_out = HeldOutNgrams(held_out_texts(folder, config.decontaminate_against), config.decontaminate_ngram,
                             config.decontaminate_boilerplate)
    lines = (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()
    shared = [held_out.grams & ngrams(example_text(json.loads(line)), held_out.n)
              for line in track(lines, "decontaminating")]
    common = held_out.common_in(shared, config.decontaminate_boilerplate)
    flagged = {index: min(grams - common) for index, grams in enumerate(shared) if grams - common}
    write_atomic(folder / REPORT, "".join(json.dumps({"train_row": index, "shared": " ".join(gram),
                                                      "example": json.loads(lines[index])}, ensure_ascii=False) + "\n"
                                          for index, gram in flagged.items()))
    stats = {"mode": config.decontaminate, "ngram": config.decontaminate_ngram,
             "against": ["validation", "test", *config.decontaminate_against], "held_out_examples": held_out.examples,
             "boilerplate_ngrams": held_out.boilerplate, "checked": len(lines), "contaminated": len(flagged),
             "dropped": 0, "dropped_tokens": 0, "dropped_trained_tokens": 0}
    if config.decontaminate == "drop" and flagged:
        stats["dropped"] = len(flagged)
        stats["dropped_tokens"], stats["dropped_trained_tokens"] = dataset.drop_rows(folder, "train", set(flagged))
    return stats


def decontamination_rows(metrics: dict) -> list[tuple[str, str]]:
    """The summary's line on train examples overlapping held-out data, when decontamination ran."""
    found = metrics.get("decontamination")
    if not found:
        return []
    what = f"{found['contaminated']} of {found['checked']} share a {found['ngram']}-gram with held-out data"
    return [("decontamination", what + (f"; {found['dropped']} dropped" if found["mode"] == "drop" else
                                        " (listed in decontaminated.jsonl, kept)"))]
