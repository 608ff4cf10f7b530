"""Stages read each other's artifacts through typed views: the wrong kind is the user's error, a manifest
missing a promised field is a damaged artifact (named), and the views say where weights and templates are."""

import json

import pytest

from privtune.artifacts import Artifact, DamagedArtifact, Workspace
from privtune.contract import DatasetArtifact, EvalArtifact, ModelArtifact
from privtune.errors import PrivtuneError


def artifact(tmp_path, **manifest):
    folder = tmp_path / f"{manifest['kind']}-{manifest['id']}"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return Artifact.load(folder)


def test_a_view_of_another_kind_is_refused(tmp_path):
    model = artifact(tmp_path, kind="model", id="aaaa11112222", method="lora")
    with pytest.raises(PrivtuneError, match="'aaaa11112222' is a model artifact, not a dataset") as error:
        DatasetArtifact.of(model, field="--data")
    assert error.value.field == "--data" and not isinstance(error.value, DamagedArtifact)


def test_a_missing_promised_field_is_a_damaged_artifact_naming_it(tmp_path):
    dataset = artifact(tmp_path, kind="dataset", id="bbbb11112222", model="m")  # no tokenizer_fingerprint
    with pytest.raises(DamagedArtifact, match="field 'tokenizer_fingerprint': field required") as error:
        DatasetArtifact.of(dataset)
    assert error.value.source.endswith("dataset-bbbb11112222/manifest.json")


def test_model_view_says_which_weights_load(tmp_path):
    model = artifact(tmp_path, kind="model", id="cccc11112222", method="lora", adapter=True, base_model="/base",
                     parents=["dddd11112222"], future_key={"kept": True})
    view = ModelArtifact.of(model)
    assert view.needs_base and view.weights == model.path / "model" and view.parents == ["dddd11112222"]
    assert view.manifest["future_key"] == {"kept": True}  # keys the view does not know are kept, unread
    (model.path / "merged").mkdir()
    assert not view.needs_base and view.weights == model.path / "merged"


def test_a_real_dataset_and_model_meet_the_contract(tickets_dataset, tmp_path):
    dataset = DatasetArtifact.of(tickets_dataset)
    assert dataset.examples == "sft" and dataset.split_size("train") > 0
    assert "{%" in dataset.chat_template and dataset.template_name == "model"
    evaluation = artifact(tmp_path, kind="eval", id="eeee11112222", model="x", dataset=dataset.id, metrics={})
    assert EvalArtifact.of(evaluation).baseline is None
    assert Workspace(tmp_path).resolve("eeee11112222", kind="eval").id == "eeee11112222"
