"""`privtune generate --preferences`: the model's own sampled answers, judged in both orders by a local
judge, become a preference dataset that DPO trains on; disagreements, ties and unparsed verdicts are
counted and never kept; a judge off this machine is refused before anything is sent."""

import json

import pytest

from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError
from privtune.generate import preferences
from tests.conftest import train_config
from tests.fake_judge import FakeJudge, _is_json

SETTINGS = dict(samples=4, num=16, temperature=1.3, max_new_tokens=24, validation_fraction=0.25, test_fraction=0)


@pytest.fixture(scope="module")
def judged(tuned_model, tickets_dataset):
    artifact, workspace = tuned_model
    with FakeJudge() as judge:
        endpoint = Endpoint(judge.url, "judge-1", url_flag="--judge-url")
        result, _ = preferences.run(artifact.id, tickets_dataset.id, endpoint,
                                    preferences.PreferenceConfig(**SETTINGS), workspace)
        requests = judge.requests
    return result, workspace, requests


def test_only_pairs_both_orders_agree_on_are_kept_with_the_judges_reasons(judged):
    result, _, requests = judged
    counts = result.manifest["metrics"]["judge"]
    assert result.manifest["examples"] == "preference" and result.manifest["mode"] == "preferences"
    assert counts["kept"] >= 1 and counts["unparsed"] == 1  # the fake judge answers off-format once
    assert counts["compared"] == counts["kept"] + counts["disagreed"] + counts["ties"] + counts["unparsed"]
    assert requests == 2 * counts["compared"]  # every compared pair asked twice, once in each order
    assert counts["compared"] + counts["identical"] == 16 * 2  # 4 samples: 2 pairs a prompt
    log = [json.loads(line) for line in (result.path / "judge.jsonl").read_text().splitlines()]
    assert sum(entry["outcome"] == "kept" for entry in log) == counts["kept"]
    kept = [json.loads(line) for split in ("train", "validation", "test")
            for line in (result.path / f"{split}.jsonl").read_text().splitlines()]
    assert len(kept) == result.manifest["metrics"]["examples"] <= counts["kept"]
    for example in kept:  # the fake judge prefers valid JSON: a kept pair has exactly one JSON answer, chosen
        assert _is_json(example["chosen"][0]["content"]) and not _is_json(example["rejected"][0]["content"])
        assert len(example["judge"]["reasons"]) == 2 and example["prompt"][-1]["role"] == "user"


def test_dpo_trains_on_the_judged_pairs(judged, tiny_model):
    """The judged pairs are a preference dataset train accepts (here on the base the SFT model came from:
    the session's SFT model is an unmerged adapter, which train refuses as a starting point)."""
    from privtune.train import stage as sft

    result, workspace, _ = judged
    artifact, _ = sft.run(result.id, str(tiny_model), train_config("dpo", max_steps=2, batch_size=2), workspace)
    assert artifact.manifest["method"] == "dpo" and result.id in artifact.manifest["parents"]
    assert artifact.manifest["metrics"]["steps"] == 2


def test_a_remote_judge_is_refused_before_anything_is_sent(tuned_model, tickets_dataset, cli):
    artifact, workspace = tuned_model
    code, output = cli("generate", "--preferences", "--model", artifact.id, "--data", tickets_dataset.id,
                       "--judge-url", "http://203.0.113.9/v1", "--judge-model", "judge", "--workspace", workspace.root)
    assert code == 2 and "--allow-remote" in output
    code, output = cli("generate", "--preferences", "--model", artifact.id, "--workspace", workspace.root)
    assert code == 2 and "--data" in output


def test_greedy_sampling_is_refused():
    from privtune.config import build_config

    with pytest.raises(PrivtuneError, match="temperature"):
        build_config(preferences.PreferenceConfig, {"temperature": 0}, source="command line")


def test_a_reward_model_can_score_the_answers_instead_of_a_judge(judged, tuned_model, tickets_dataset, tiny_model,
                                                                 cli):
    """--reward-model: each prompt's best-scored answer is chosen and its worst rejected, above min_margin."""
    from privtune.train import stage as train

    result, workspace, _ = judged
    reward, _ = train.run(result.id, str(tiny_model), train_config("reward", max_steps=2, batch_size=2), workspace)
    sft_model = tuned_model[0]
    config = preferences.PreferenceConfig(**{**SETTINGS, "min_margin": 0.001})
    scored, _ = preferences.run(sft_model.id, tickets_dataset.id, None, config, workspace, reward_model=reward.id)
    counts = scored.manifest["metrics"]["judge"]
    assert scored.manifest["judge"] == {"reward_model": reward.id} and reward.id in scored.manifest["parents"]
    assert counts["compared"] + counts["identical"] == 16 and counts["kept"] + counts["ties"] == counts["compared"]
    log = [json.loads(line) for line in (scored.path / "judge.jsonl").read_text().splitlines()]
    assert len(log) == counts["compared"] and all(len(entry["scores"]) >= 2 for entry in log)
    kept = [json.loads(line) for split in ("train", "validation", "test")
            for line in (scored.path / f"{split}.jsonl").read_text().splitlines()]
    assert kept and all(e["judge"]["scores"][0] - e["judge"]["scores"][1] > 0.001 for e in kept)
    assert all(e["chosen"][0]["content"] != e["rejected"][0]["content"] for e in kept)
    with pytest.raises(PrivtuneError, match="not a reward model") as caught:
        preferences.run(sft_model.id, tickets_dataset.id, None, config, workspace, reward_model=sft_model.id)
    assert caught.value.field == "--reward-model"
    code, output = cli("generate", "--preferences", "--model", sft_model.id, "--data", tickets_dataset.id,
                       "--reward-model", reward.id, "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j",
                       "--workspace", workspace.root)
    assert code == 2 and "not both" in output


def test_an_identical_run_is_reused_without_loading_the_model(judged, tuned_model, tickets_dataset, monkeypatch):
    import privtune.models.inference as inference

    result, workspace, _ = judged

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded a model for a run that exists")

    monkeypatch.setattr(inference, "load_for_inference", no_loading)
    endpoint = Endpoint(result.manifest["judge"]["base_url"], "judge-1", url_flag="--judge-url")  # stopped: never asked
    again, reused = preferences.run(tuned_model[0].id, tickets_dataset.id, endpoint,
                                    preferences.PreferenceConfig(**SETTINGS), workspace)
    assert reused and again.path == result.path
