"""Preference methods (dpo, orpo, kto) are registry entries that train TRL's trainers on preference (or
unpaired) datasets from prep; train refuses a dataset of the wrong kind before any work."""

import json

import pytest

from privtune.artifacts import Workspace
from privtune.data import prep
from privtune.errors import PrivtuneError
from privtune.train import stage as sft
from privtune.train.method import methods
from tests.conftest import train_config

CATEGORIES = ["bug", "billing", "account"]


def pairs(count: int) -> list[dict]:
    """Tickets whose chosen answer names the category as JSON, the rejected one evades."""
    return [{"prompt": f"Classify ticket {i}: {CATEGORIES[i % 3]} problem number {i}",
             "chosen": json.dumps({"category": CATEGORIES[i % 3]}), "rejected": "I am not sure, sorry."}
            for i in range(count)]


@pytest.fixture(scope="module")
def preference_data(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("preference")
    workspace = Workspace(folder / "runs")
    records = folder / "pairs.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in pairs(48)))
    unpaired = folder / "kto.jsonl"
    unpaired.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": answer, "label": good}) + "\n"
                                for r in pairs(24) for answer, good in ((r["chosen"], True), (r["rejected"], False))))
    config = prep.PrepConfig(max_length=64, validation_fraction=0.25, test_fraction=0)
    paired, _ = prep.run([records], str(tiny_model), config, workspace)
    kto, _ = prep.run([unpaired], str(tiny_model), config, workspace)
    return paired, kto, workspace


def test_the_preference_methods_are_registry_entries():
    found = methods()
    assert {name: found[name].examples for name in ("dpo", "orpo", "kto")} == {
        "dpo": "preference", "orpo": "preference", "kto": "unpaired"}
    assert all(found[name].adapter and found[name].section == "preference" for name in ("dpo", "orpo", "kto"))


def test_dpo_learns_to_prefer_the_chosen_answers(preference_data, tiny_model):
    paired, _, workspace = preference_data
    artifact, reused = sft.run(paired.id, str(tiny_model), dpo_config(), workspace)
    metrics = artifact.manifest["metrics"]
    assert not reused and artifact.manifest["method"] == "dpo" and artifact.manifest["adapter"]
    assert metrics["steps"] == 12 and metrics["eval_loss_start"] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy = reference
    assert metrics["eval_loss_end"] < metrics["eval_loss_start"] - 0.05
    assert metrics["eval_preference_accuracy"] > 0.5 and metrics["eval_reward_margin"] > 0
    assert paired.id in artifact.manifest["parents"]


@pytest.mark.parametrize("method, which", [("orpo", 0), ("kto", 1)])
def test_orpo_and_kto_train_on_their_kinds(preference_data, tiny_model, method, which):
    data, workspace = preference_data[which], preference_data[2]
    config = train_config(method, max_steps=4, batch_size=4, learning_rate=5e-3, logging_steps=1)
    artifact, _ = sft.run(data.id, str(tiny_model), config, workspace)
    metrics = artifact.manifest["metrics"]
    assert artifact.manifest["method"] == method and metrics["steps"] == 4
    assert metrics["train_loss_last"] is not None and metrics["eval_loss_end"] is not None


def test_train_refuses_a_dataset_of_the_wrong_kind(preference_data, tickets_dataset, tiny_model):
    paired, kto, workspace = preference_data
    cases = [("lora", paired, "holds preference examples; method 'lora' trains on sft"),
             ("dpo", kto, "holds unpaired examples; method 'dpo' trains on preference"),
             ("kto", paired, "holds preference examples; method 'kto' trains on unpaired")]
    for method, data, message in cases:
        with pytest.raises(PrivtuneError) as caught:
            sft.run(data.id, str(tiny_model), train_config(method, max_steps=1), workspace)
        assert message in caught.value.message and caught.value.field == "--data"
    sft_workspace = Workspace(tickets_dataset.path.parent)
    with pytest.raises(PrivtuneError) as caught:
        sft.run(tickets_dataset.id, str(tiny_model), train_config("dpo", max_steps=1), sft_workspace)
    assert "holds sft examples; method 'dpo' trains on preference" in caught.value.message


def dpo_config():
    return train_config("dpo", max_steps=12, batch_size=4, learning_rate=5e-3, **{"preference.beta": 0.1})


def test_eval_ranks_held_out_pairs_dpo_above_its_reference(preference_data, tiny_model, cli):
    """On a preference dataset eval reports how often each model prefers the chosen answer (log-probabilities),
    and DPO's implicit reward against its baseline (the model it started from, its reference)."""
    from privtune.eval import stage as evaluation
    from privtune.eval.stage import EvalConfig

    paired, kto, workspace = preference_data
    dpo, _ = sft.run(paired.id, str(tiny_model), dpo_config(), workspace)  # the DPO test's model, reused
    result, _ = evaluation.run(dpo.id, EvalConfig(), workspace)
    metrics = result.manifest["metrics"]
    tuned, base = metrics["models"]["tuned"], metrics["models"]["baseline"]
    assert metrics["kind"] == "preference" and metrics["split"] == "validation" and metrics["examples"] == paired.manifest["metrics"]["splits"]["validation"]
    assert tuned["preference_accuracy"] >= base["preference_accuracy"] and tuned["logp_margin"] > base["logp_margin"]
    assert tuned["implicit_reward_accuracy"] >= 0.9  # trained to raise the chosen answers over the reference
    low, high = metrics["intervals"]["tuned"]["implicit_reward_accuracy"]
    assert low <= tuned["implicit_reward_accuracy"] <= high
    assert metrics["paired"]["logp_margin"]["difference"] > 0
    assert "implicit_reward_accuracy" in (result.path / "report.md").read_text()
    code, output = cli("eval", "--model", dpo.id, "--workspace", workspace.root)
    assert code == 0 and "implicit_reward_accuracy" in output and result.id in output
    code, output = cli("eval", "--model", dpo.id, "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j",
                       "--workspace", workspace.root)
    assert code == 2 and "ranks its held-out pairs" in output
    with pytest.raises(PrivtuneError) as caught:
        evaluation.run(dpo.id, EvalConfig(), workspace, data=kto.id)
    assert "holds unpaired examples" in caught.value.message and caught.value.field == "--data"


def test_a_reward_model_learns_to_rank_the_chosen_answers_on_held_out_pairs(preference_data, tiny_model):
    """The reward method loads the base with a one-output score head and reports held-out pairwise accuracy,
    from the untrained head's (about chance) to the trained one's."""
    from peft import PeftConfig

    paired, _, workspace = preference_data
    config = train_config("reward", max_steps=12, batch_size=4, learning_rate=3e-3, logging_steps=1)
    artifact, _ = sft.run(paired.id, str(tiny_model), config, workspace)
    metrics = artifact.manifest["metrics"]
    assert artifact.manifest["method"] == "reward" and metrics["steps"] == 12
    assert metrics["eval_pairwise_accuracy"] >= 0.9 and metrics["eval_reward_margin"] > 0
    assert metrics["eval_pairwise_accuracy_start"] is not None
    assert metrics["eval_pairwise_accuracy"] > metrics["eval_pairwise_accuracy_start"]
    adapter = PeftConfig.from_pretrained(str(artifact.path / "model"))
    assert adapter.task_type == "SEQ_CLS" and "score" in adapter.modules_to_save
    with pytest.raises(PrivtuneError, match="cannot be merged|not mergeable|merge"):
        sft.run(paired.id, str(tiny_model), config, workspace, sft.TrainOptions(merge=True))
    from privtune.eval import stage as evaluation

    ranked, _ = evaluation.run(artifact.id, evaluation.EvalConfig(), workspace)
    accuracy = ranked.manifest["metrics"]["models"]["tuned"]["reward_accuracy"]
    assert list(ranked.manifest["metrics"]["models"]) == ["tuned"]  # a reward model has no baseline to rank with
    assert accuracy == pytest.approx(metrics["eval_pairwise_accuracy"], abs=0.1) and accuracy >= 0.9


def test_training_on_an_unmerged_sft_adapter_is_refused_with_the_way_out(tuned_model, tiny_model):
    """A new adapter over an SFT adapter merged only in memory would record a base nothing could load back:
    train asks for the merged SFT model instead, before loading anything."""
    from privtune.models.loading import resolve_model
    from privtune.train.method import method_of

    artifact, workspace = tuned_model
    assert artifact.manifest["adapter"] and not artifact.manifest["merged"]
    with pytest.raises(PrivtuneError) as caught:
        sft.load_model(resolve_model(artifact.id, workspace), method_of("dpo"), train_config("dpo"), "fp32")
    assert "adapter without merged weights" in caught.value.message and "--merge" in caught.value.hint
    assert caught.value.field == "--model"


def test_dpo_can_train_every_weight(preference_data, tiny_model):
    """preference.full: no adapter, full weights saved (TRL holds a frozen copy as the reference), loadable by eval."""
    from privtune.eval import stage as evaluation

    paired, _, workspace = preference_data
    config = train_config("dpo", max_steps=4, batch_size=4, learning_rate=1e-3, **{"preference.full": True})
    artifact, _ = sft.run(paired.id, str(tiny_model), config, workspace)
    assert not artifact.manifest["adapter"] and (artifact.path / "model" / "config.json").is_file()
    assert not (artifact.path / "model" / "adapter_config.json").exists()
    metrics = artifact.manifest["metrics"]
    assert metrics["steps"] == 4 and metrics["eval_loss_end"] < metrics["eval_loss_start"]
    assert metrics["trainable_params"] > 100_000  # every weight, not an adapter's few
    ranked, _ = evaluation.run(artifact.id, evaluation.EvalConfig(), workspace)
    assert ranked.manifest["metrics"]["models"]["tuned"]["implicit_reward_accuracy"] > 0.5


def test_dpo_with_the_chosen_answers_loss_added(preference_data, tiny_model):
    """preference.sft_weight adds the chosen answers' own loss (RPO): TRL logs it, and DPO still learns the pairs."""
    paired, _, workspace = preference_data
    config = train_config("dpo", max_steps=4, batch_size=4, learning_rate=5e-3, logging_steps=1,
                          **{"preference.sft_weight": 1.0})
    artifact, _ = sft.run(paired.id, str(tiny_model), config, workspace)
    logged = [json.loads(line) for line in (artifact.path / "metrics.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in
             (sft.run(paired.id, str(tiny_model), train_config("dpo", max_steps=4, batch_size=4, learning_rate=5e-3,
                                                                logging_steps=1), workspace)[0].path
              / "metrics.jsonl").read_text().splitlines()]
    first = lambda rows: next(r["loss"] for r in rows if "loss" in r)
    assert first(logged) > first(plain) + 0.1  # log 2 plus the chosen answers' cross-entropy, at the same start
    assert artifact.manifest["metrics"]["eval_preference_accuracy"] >= 0.5
