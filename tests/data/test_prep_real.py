"""prep on the real SmolLM2 tokenizer and ChatML template (with its default system prompt): the
trained-token mask covers exactly each trained assistant reply plus its `<|im_end|>`, nothing else."""

import json

import pyarrow.parquet as pq
import pytest

from privtune.data import prep

pytestmark = pytest.mark.real_model

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Where is my order #1042?"},
                  {"role": "assistant", "content": "It shipped on Monday; tracking: 1Z999."},
                  {"role": "user", "content": "And the charger?"},
                  {"role": "assistant", "content": "It ships separately, in 2 days."}]},
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Refund please"},
                  {"role": "assistant", "content": "Not trained on.", "weight": 0},
                  {"role": "user", "content": "Now?"},
                  {"role": "assistant", "content": "{\"category\": \"refund\", \"priority\": \"high\"}"}]},
]


def _runs(ids, mask):
    """Contiguous runs of trained tokens."""
    runs, current = [], []
    for token, trained in zip(ids, mask):
        if trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_mask_is_each_reply_and_its_end_of_turn(smol_model, real_workspace, tmp_path):
    from transformers import AutoTokenizer

    records = tmp_path / "chats.jsonl"
    records.write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS))
    artifact, _ = prep.run([records], smol_model.id, prep.PrepConfig(validation_fraction=0, test_fraction=0),
                           real_workspace)
    tokenizer = AutoTokenizer.from_pretrained(smol_model.path / "model")
    rows = {tokenizer.decode(r["input_ids"]): r for r in
            pq.read_table(artifact.path / "tokenized" / "train.parquet").to_pylist()}
    expected = {0: ["It shipped on Monday; tracking: 1Z999.<|im_end|>", "It ships separately, in 2 days.<|im_end|>"],
                1: ['{"category": "refund", "priority": "high"}<|im_end|>']}
    for index, conversation in enumerate(CONVERSATIONS):
        text = next(t for t in rows if conversation["messages"][1]["content"] in t)
        row = rows[text]
        spans = [tokenizer.decode(run) for run in _runs(row["input_ids"], row["assistant_masks"])]
        assert spans == expected[index]
        assert "You are a helpful AI assistant named SmolLM" in text or index == 1  # the template's own system prompt
        trained = [t for t, m in zip(row["input_ids"], row["assistant_masks"]) if m]
        assert trained.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == len(expected[index])
