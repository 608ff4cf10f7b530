"""`privtune eval`: tuned against base on held-out data, report files, judge with the order swapped."""

import json
import re

import pytest

from privtune.endpoint import Endpoint
from privtune.eval import stage
from privtune.eval.metrics import parse_verdict, score, wilson_interval
from privtune.models.inference import load_for_inference


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


def test_every_figure_has_an_interval_and_the_gain_a_paired_test(tuned_model, cli):
    artifact, workspace = tuned_model
    evaluation, _ = stage.run(artifact.id, stage.EvalConfig(limit=16, max_new_tokens=32), workspace)
    metrics = json.loads((evaluation.path / "metrics.json").read_text())
    assert metrics["models"] == evaluation.manifest["metrics"]["models"]  # the floats stay where they were
    for label in ("tuned", "baseline"):
        assert set(metrics["intervals"][label]) == set(stage.TABLE_METRICS)
        for metric, (low, high) in metrics["intervals"][label].items():
            assert low <= metrics["models"][label][metric] <= high, (label, metric)
    assert 0 < metrics["intervals"]["tuned"]["rouge_l"][1] - metrics["intervals"]["tuned"]["rouge_l"][0] < 0.5
    paired = metrics["paired"]
    assert set(paired) == set(stage.TABLE_METRICS)
    # the tuned model's loss is lower on every one of the 16 examples: sign test p = 2 / 2^16
    loss = paired["loss"]
    tuned, base = metrics["models"]["tuned"], metrics["models"]["baseline"]
    assert loss["difference"] == pytest.approx(tuned["loss"] - base["loss"])
    assert (loss["wins"], loss["losses"], loss["ties"]) == (16, 0, 0) and loss["p_value"] == pytest.approx(2 / 2 ** 16)
    assert loss["ci"][1] < 0 and loss["significant"] and loss["better"] == "tuned"
    assert paired["json_field_accuracy"]["significant"] and paired["json_field_accuracy"]["better"] == "tuned"
    assert paired["bleu"]["test"] == "paired bootstrap" and paired["bleu"]["ci"][0] > 0

    report = (evaluation.path / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric |"))
    assert f"tuned (model {artifact.id[:8]})" in header and "base (tiny-llama)" in header
    assert evaluation.id not in header and "significant at 0.05" in header
    assert re.search(r"^\| rouge_l \| \d\.\d{4} \[\d\.\d\d, \d\.\d\d\] \| ", report, re.MULTILINE)
    row = re.search(r"^\| json_field_accuracy \|.*\| (\d+)/0/(\d+) \| yes, tuned better \(p=([\d.e-]+)\) \|$", report,
                    re.MULTILINE)
    assert row and int(row[1]) + int(row[2]) == 16 and int(row[1]) >= 12, report
    assert float(row[3]) == pytest.approx(2 / 2 ** int(row[1]), rel=0.01)  # two-sided sign test, no losses
    assert "On these 16 examples, at the 0.05 level: tuned better: loss," in report
    code, out = cli("compare", evaluation.id, "--workspace", workspace.root)
    assert code == 0 and f"(model {artifact.id[:8]})" in out and "(tiny-llama)" in out  # role and name: 2 lines
    assert "tuned better" in out and "[low, high]" in out and evaluation.id[:8] not in out


def test_identical_models_show_no_difference(tuned_model, cli):
    artifact, workspace = tuned_model
    evaluation, _ = stage.run(artifact.id, stage.EvalConfig(limit=8, max_new_tokens=24), workspace,
                              baseline=artifact.id)
    paired = evaluation.manifest["metrics"]["paired"]
    assert set(paired) == set(stage.TABLE_METRICS)
    for metric, test in paired.items():
        assert test["difference"] == 0 and test["ci"] == [0, 0] and not test["significant"], metric
        if metric != "bleu":
            assert test["ties"] == 8 and test["p_value"] == 1.0, metric
    report = (evaluation.path / "report.md").read_text()
    assert "at the 0.05 level: no significant difference: loss, perplexity," in report
    assert "tuned better" not in report and f"base (model {artifact.id[:8]})" in report
    other, _ = stage.run(artifact.id, stage.EvalConfig(limit=16, max_new_tokens=32), workspace)
    code, out = cli("compare", evaluation.id, other.id, "--workspace", workspace.root)
    assert code == 0 and evaluation.id[:8] in out and other.id[:8] in out  # two evals: columns say which
    assert "8 / 16 examples" in out


def test_labels_and_cells():
    assert stage.model_label("tuned", "3f2a1b2c4d5e") == "tuned (model 3f2a1b2c)"
    assert stage.model_label("base", "HuggingFaceTB/SmolLM2-135M-Instruct") == "base (SmolLM2-135M-Instruct)"
    assert stage.model_label("base", "/models/" + "x" * 40) == "base (" + "x" * 27 + "…)"
    assert stage.cell(0.8, [0.7, 0.8912]) == "0.8000 [0.70, 0.89]" and stage.cell(None) == "-"
    # an eval without a baseline, or written before intervals existed: plain figures, no paired columns
    assert stage.table_rows({"models": {"tuned": {"loss": 1.5, "bleu": None}}}) == [("loss", "1.5000")]
    assert stage.labels_of({"model": "3f2a1b2c4d5e", "baseline": None, "metrics": {}}) == {
        "tuned": "tuned (model 3f2a1b2c)", "baseline": "base"}


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


def test_batched_loss_equals_one_example_at_a_time(tuned_model, tickets_dataset):
    """The loss pass batches (padding masked out); each example's figures are the unbatched ones."""
    import pyarrow.parquet as pq

    from privtune.eval.stage import held_out_loss, single_example_loss

    artifact, workspace = tuned_model
    loaded = load_for_inference(artifact.id, workspace)
    rows = pq.read_table(tickets_dataset.path / "tokenized" / "test.parquet").to_pylist()
    assert len({len(r["input_ids"]) for r in rows}) > 1  # batches really pad
    _, batched = held_out_loss(loaded, rows, batch_size=8)
    for (total, count), row in zip(batched, rows):
        alone, alone_count = single_example_loss(loaded, row)
        assert count == alone_count and abs(total - alone) < 1e-4 * max(1.0, abs(alone))


def test_loss_batches_stay_within_the_logits_budget():
    """A big vocabulary at long lengths goes one row at a time; short rows fill the batch size."""
    from privtune.eval.stage import LOGITS_BUDGET, loss_batches

    short = loss_batches([80] * 40, list(range(40)), 16, 49_152)
    assert [len(b) for b in short] == [16, 16, 8]
    long = loss_batches([1024] * 3, [0, 1, 2], 16, 152_064)
    assert long == [[0], [1], [2]]
    mixed = loss_batches([10, 10, 900, 900], [3, 1, 0, 2], 16, 152_064)
    assert sum(mixed, []) == [3, 1, 0, 2] and all(len(b) * 900 * 152_064 <= LOGITS_BUDGET or len(b) == 1
                                                  for b in mixed[1:])


def test_eval_rereads_the_load_every_token_and_loss_batch_with_the_same_answers(tuned_model, tickets_dataset,
                                                                                restore_threads):
    """With a ThreadsFollower, generation re-reads the machine's load at every token and the loss pass at every
    batch; a core taken by another process drops a thread at once, and the answers are those without one."""
    import pyarrow.parquet as pq
    import torch

    from privtune.runtime import ThreadsFollower

    class Load:
        readings = 0

        def cores(self):
            self.readings += 1
            return 0.0 if self.readings < 3 else 1.0  # another process takes a core after two readings

    artifact, workspace = tuned_model
    loaded = load_for_inference(artifact.id, workspace)
    rows = pq.read_table(tickets_dataset.path / "tokenized" / "test.parquet").to_pylist()[:4]
    prompts = [[{"role": "user", "content": f"ticket {i}: the app crashes"}] for i in range(4)]
    config = stage.EvalConfig(max_new_tokens=6, batch_size=2)
    follower = ThreadsFollower(2, 2, load=Load(), min_seconds=0)
    torch.set_num_threads(2)
    assert stage.generate_answers(loaded, prompts, config, follower) == stage.generate_answers(loaded, prompts, config)
    assert follower.load.readings >= 2 * 5 and torch.get_num_threads() == 1  # >= 5 new tokens in each of 2 batches
    assert follower.changes and follower.changes[0][1] == 1
    before = follower.load.readings
    stage.held_out_loss(loaded, rows, batch_size=2, follower=follower)
    assert follower.load.readings - before == 2


def test_the_held_out_loss_reuses_the_prompt_cache_of_generation(tuned_model, tickets_dataset):
    """The loss from the cache generation left equals the plain loss pass's, row for row, and generation's
    answers are those without it; a row whose prompt is not the start of its tokenized row is left to the plain
    pass, with the rest of its batch."""
    from privtune.contract import DatasetArtifact, split_rows

    artifact, workspace = tuned_model
    loaded = load_for_inference(artifact.id, workspace)
    _, rows, tokenized = split_rows(DatasetArtifact.of(tickets_dataset), 12)
    config = stage.EvalConfig(max_new_tokens=8, batch_size=4)
    prompts = [r["messages"][:-1] for r in rows]
    _, plain = stage.held_out_loss(loaded, tokenized, batch_size=4)
    found = {}
    answers = stage.generate_answers(loaded, prompts, config, None, stage.losses_from_prompt_cache(loaded, tokenized,
                                                                                                   found))
    assert answers == stage.generate_answers(loaded, prompts, config)
    assert sorted(found) == list(range(len(rows)))
    for index, (total, count) in found.items():
        assert count == plain[index][1] and total == pytest.approx(plain[index][0], rel=1e-4)
    odd = [dict(row) for row in tokenized]
    odd[5] = {**odd[5], "input_ids": [odd[5]["input_ids"][0] + 1] + odd[5]["input_ids"][1:]}
    found = {}
    stage.generate_answers(loaded, prompts, config, None, stage.losses_from_prompt_cache(loaded, odd, found))
    assert sorted(found) == [0, 1, 2, 3, 8, 9, 10, 11]  # the batch of rows 4-7 goes to the plain pass
    metrics, _, _ = stage.evaluate_model(loaded, rows, tokenized, config)
    total, count = sum(t for t, _ in plain), sum(c for _, c in plain)
    assert metrics["loss"] == pytest.approx(total / count, rel=1e-5)
