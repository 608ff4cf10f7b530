"""Training methods come from privtune.train.methods, one module each: the recipe's `method` choices,
its per-method sections and what train does with a method are all read from there."""

import shutil

import pytest

from privtune.artifacts import Artifact, write_json_atomic
from privtune.config import field_docs
from privtune.errors import PrivtuneError
from privtune.train import stage
from privtune.train.config import TrainConfig
from privtune.train.method import methods, method_of

from tests.conftest import train_config


def test_every_method_is_registered_in_order_and_described():
    today = ["full", "lora", "qlora", "prompt-tuning"]  # a new method is one more file; these keep their order
    assert [name for name in methods() if name in today] == today
    assert all(m.description for m in methods().values())
    assert not methods()["full"].adapter and all(methods()[name].adapter for name in today[1:])
    assert not methods()["prompt-tuning"].mergeable and methods()["qlora"].mergeable


def test_the_recipe_gets_each_methods_section_from_its_module():
    sections = {m.section for m in methods().values() if m.settings}
    assert sections == {"lora", "prompt_tuning", "preference"}
    assert {f"{section}." in " ".join(field_docs(TrainConfig)) for section in sections} == {True}
    assert type(TrainConfig().lora) is method_of("qlora").settings  # qlora shares lora's keys


def test_an_unknown_method_lists_the_registered_ones():
    with pytest.raises(PrivtuneError, match="unknown training method 'ppo'") as error:
        method_of("ppo")
    assert "prompt-tuning" in error.value.hint and "dpo" in error.value.hint


def test_train_refuses_a_dataset_of_another_kind_of_examples(tickets_dataset, tiny_model, workspace, tmp_path):
    copy = tmp_path / "dataset-copy"
    shutil.copytree(tickets_dataset.path, copy)
    manifest = {**tickets_dataset.manifest, "examples": "preference"}
    write_json_atomic(copy / "manifest.json", manifest)
    with pytest.raises(PrivtuneError, match="holds preference examples; method 'lora' trains on sft examples"):
        stage.run(str(Artifact.load(copy).path), str(tiny_model), train_config("lora"), workspace)
