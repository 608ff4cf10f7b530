"""Answer metrics come from their registry (one module each in privtune/eval/answer_metrics/): the eval
computes, tabulates and plots whatever is there, so a new metric needs no change elsewhere."""

import subprocess
import sys

import pytest

from privtune.eval import report, stage
from privtune.eval.metrics import Metric, answer_metrics, score

ANSWER_METRICS = ["rouge_l", "bleu", "exact_match", "normalized_match", "json_field_accuracy"]


def test_the_registry_holds_every_answer_metric_in_table_order():
    names = [name for name in answer_metrics() if name in ANSWER_METRICS]  # a new metric is one more file
    assert names == ANSWER_METRICS
    assert stage.TABLE_METRICS == ("loss", "perplexity", *answer_metrics(), "stopped_before_limit")
    assert all(metric.description for metric in answer_metrics().values())
    assert [name for name, m in answer_metrics().items() if m.plot] == [
        "rouge_l", "exact_match", "normalized_match", "json_field_accuracy"]


def test_metric_modules_import_nothing_heavy():
    code = ("import sys; from privtune.eval.metrics import answer_metrics; answer_metrics(); "
            "print(sorted({'numpy', 'sacrebleu', 'torch'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_scores_by_hand():
    assert score("a", "a") == {"rouge_l": 1.0, "exact_match": 1.0, "normalized_match": 1.0}
    # 3 tokens in common, precision 3/3, recall 3/6: F = 2 * 1 * 0.5 / 1.5
    assert score("The cat sat", "the cat sat on the mat") == {
        "rouge_l": pytest.approx(2 / 3), "exact_match": 0.0, "normalized_match": 0.0}
    assert score(" Hello, World! ", "hello world") == {"rouge_l": 1.0, "exact_match": 0.0, "normalized_match": 1.0}
    assert score(" same ", "same")["exact_match"] == 1.0
    assert score('{"a": 1, "b": 2}', '{"a": 1, "b": 3}')["json_field_accuracy"] == 0.5
    assert score("not json", '{"a": 1}')["json_field_accuracy"] == 0.0
    assert all("json_field_accuracy" not in score("x", ref) for ref in ("plain text", "[1, 2]", "{}"))
    bleu, statistic = answer_metrics()["bleu"].corpus(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert bleu == pytest.approx(100.0) and statistic.per_example is None


def test_a_new_metric_reaches_the_table_without_touching_it():
    length_ratio = Metric(name="length_ratio", order=25, per_example=lambda p, r: len(p) / max(len(r), 1),
                          description="answer length over reference length")
    names = report.table_metrics([*answer_metrics().values(), length_ratio])
    assert names[names.index("bleu") + 1] == "length_ratio"
    metrics = {"models": {"tuned": {"loss": 1.5, "length_ratio": 0.5}, "baseline": {"loss": 2.0, "length_ratio": 1.0}}}
    assert report.table_rows(metrics, names) == [("loss", "1.5000", "2.0000"), ("length_ratio", "0.5000", "1.0000")]
    assert report.table_rows(metrics) == [("loss", "1.5000", "2.0000")]  # not registered: not shown
    with pytest.raises(TypeError):
        Metric(name="neither", order=1, description="no way to compute it")
