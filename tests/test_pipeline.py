"""Chaining lives in privtune.pipeline: a records file given to train is prepped first, then trained on."""

import re

from tests.conftest import FORMATS


def test_train_on_a_records_file_preps_it_first(cli, tiny_model, workspace):
    args = ["train", "--data", FORMATS / "alpaca.jsonl", "--model", tiny_model, "--recipe", "tiny-lora",
            "--set", "max_steps=1", "--set", "batch_size=2", "--workspace", workspace.root]
    code, out = cli(*args)
    assert code == 0 and "prepared it for the model first" in out, out
    datasets = [a for a in workspace.artifacts() if a.kind == "dataset"]
    models = [a for a in workspace.artifacts() if a.kind == "model"]
    assert len(datasets) == 1 and len(models) == 1 and datasets[0].id in models[0].manifest["parents"]
    assert re.search(rf"model {models[0].id} -> ", out)
    code, again = cli(*args)  # the prep is found, and so is the model
    assert code == 0 and "found its identical prep" in again and "found an identical model" in again, again
