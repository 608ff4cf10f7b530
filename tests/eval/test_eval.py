"""`privtune eval`: tuned against base on held-out data, report files, judge with the order swapped."""

import json


from privtune.endpoint import Endpoint
from privtune.eval import stage
from privtune.eval.metrics import parse_verdict, score, wilson_interval


def test_tuned_beats_base_and_the_report_is_written(tuned_model, cli):
    artifact, workspace = tuned_model
    evaluation, found = stage.run(artifact.id, stage.EvalConfig(limit=16, max_new_tokens=32), workspace)
    models = evaluation.manifest["metrics"]["models"]
    tuned, base = models["tuned"], models["baseline"]
    assert tuned["loss"] < base["loss"] and tuned["rouge_l"] > base["rouge_l"]
    assert tuned["json_field_accuracy"] > base["json_field_accuracy"]
    assert evaluation.manifest["parents"][0] == artifact.id
    for name in ("metrics.json", "samples.jsonl", "report.md", "comparison.png", "loss_curve.png"):
        assert (evaluation.path / name).is_file(), name
    sample = json.loads((evaluation.path / "samples.jsonl").read_text().splitlines()[0])
    assert {"prompt", "reference", "tuned", "baseline"} <= set(sample)
    assert "| rouge_l |" in (evaluation.path / "report.md").read_text()
    code, out = cli("compare", evaluation.id, "--workspace", workspace.root)
    assert code == 0 and "rouge_l" in out


def test_judge_swaps_order_and_counts_unparsed(tuned_model):
    from tests.fake_judge import FakeJudge

    artifact, workspace = tuned_model
    with FakeJudge() as judge:
        endpoint = Endpoint(judge.url, "judge-1", url_flag="--judge-url")
        evaluation, _ = stage.run(artifact.id, stage.EvalConfig(limit=8, max_new_tokens=24), workspace,
                                  judge=endpoint, force=True)
    summary = evaluation.manifest["metrics"]["judge"]
    log = [json.loads(l) for l in (evaluation.path / "judge.jsonl").read_text().splitlines()]
    assert [r["swapped"] for r in log] == [False, True] * 4
    # the fake judge says A when A is valid JSON, else B: replay that rule to check the un-swapping
    from tests.fake_judge import _is_json

    samples = [json.loads(l) for l in (evaluation.path / "samples.jsonl").read_text().splitlines()]
    for entry, sample in zip(log, samples):
        if entry["verdict"] is None:
            continue
        a, b = (sample["baseline"], sample["tuned"]) if entry["swapped"] else (sample["tuned"], sample["baseline"])
        said_a = _is_json(a["output"])
        assert entry["winner"] == (("baseline" if entry["swapped"] else "tuned") if said_a else
                                   ("tuned" if entry["swapped"] else "baseline"))
    assert summary["unparsed"] == 1  # it answered in an unexpected form once: counted, not a win
    assert summary["wins"] + summary["losses"] + summary["ties"] == 7 == summary["decided"]
    assert summary["wins"] >= 4


def test_remote_judge_is_refused(tuned_model, cli):
    artifact, workspace = tuned_model
    code, out = cli("eval", "--model", artifact.id, "--judge-url", "https://judge.example.com/v1", "--judge-model",
                    "j", "--workspace", workspace.root)
    assert code == 2 and "--allow-remote" in out and "--judge-url" in out


def test_metrics():
    assert score('{"a": 1, "b": 2}', '{"a": 1, "b": 3}')["json_field_accuracy"] == 0.5
    assert score("Hello, World!", "hello world")["normalized_match"] == 1.0
    assert parse_verdict("Reasoning.\\nWinner: B".split("\\n")[-1]) == "B" and parse_verdict("I think so") is None
    low, high = wilson_interval(8, 10)
    assert 0.4 < low < 0.8 < high < 1.0
