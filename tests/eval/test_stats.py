"""Bootstrap intervals, paired differences and the sign test against hand-computed cases."""

import math
from dataclasses import replace

import numpy as np
import pytest

from privtune.eval import stats
from privtune.eval.metrics import bleu_statistic, corpus_bleu


@pytest.mark.parametrize("wins, losses, expected", [
    (8, 0, 2 / 256),                     # all 8 one way: 2 * (1/2)^8
    (0, 8, 2 / 256),                     # two-sided: symmetric
    (9, 1, 2 * (1 + 10) / 1024),         # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    (6, 2, 2 * (1 + 8 + 28) / 256),      # 0.289...
    (5, 5, 1.0),                         # the doubled tail passes 1: capped
    (0, 0, 1.0),                         # only ties: no evidence either way
    (1, 0, 1.0),
])
def test_sign_test_on_known_counts(wins, losses, expected):
    assert stats.sign_test(wins, losses) == pytest.approx(expected, rel=1e-12)


def test_sign_test_agrees_with_scipy():
    binomtest = pytest.importorskip("scipy.stats").binomtest
    for wins, losses in [(3, 12), (20, 9), (40, 60), (150, 120), (7, 7)]:
        expected = binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue
        assert stats.sign_test(wins, losses) == pytest.approx(expected, rel=1e-9)


def test_mean_interval_contains_the_mean_and_shrinks_with_n():
    widths = {}
    for n in (20, 2000):
        values = [float(i % 2) for i in range(n)]  # mean 0.5, sd 0.5
        indices = stats.resample_indices(n, 1000, seed=42)
        low, high = stats.interval(stats.mean_of(values), indices)
        assert low < 0.5 < high
        widths[n] = high - low
    # normal approximation: 2 * 1.96 * 0.5 / sqrt(n)
    assert widths[2000] == pytest.approx(2 * 1.96 * 0.5 / math.sqrt(2000), rel=0.15)
    assert 6 < widths[20] / widths[2000] < 14  # ~sqrt(100)


def test_same_seed_same_interval_other_seed_other_draws():
    values = list(np.random.default_rng(0).random(50))
    first = stats.interval(stats.mean_of(values), stats.resample_indices(50, 500, seed=7))
    assert first == stats.interval(stats.mean_of(values), stats.resample_indices(50, 500, seed=7))
    assert first != stats.interval(stats.mean_of(values), stats.resample_indices(50, 500, seed=8))


def test_loss_resamples_examples_and_weights_by_tokens():
    # two examples: summed loss 2 over 1 token, 9 over 3 tokens
    loss = stats.ratio([2.0, 9.0], [1, 3])
    assert loss.compute(np.array([[0, 1]]))[0] == pytest.approx(11 / 4)  # not the mean of means (2.5)
    assert loss.compute(np.array([[0, 0, 1]]))[0] == pytest.approx(13 / 5)
    assert loss.compute(np.array([[1, 1]]))[0] == pytest.approx(3.0)
    assert list(loss.per_example) == [2.0, 3.0]
    # an example without trained tokens adds nothing; a resample of only such examples is undefined
    empty = stats.ratio([2.0, 0.0], [1, 0])
    assert empty.compute(np.array([[0, 1]]))[0] == 2.0 and math.isnan(empty.compute(np.array([[1, 1]]))[0])


def test_scores_only_some_examples_have():
    accuracy = stats.mean_of([1.0, None, 0.0, None])  # JSON fields: only JSON references are scored
    assert accuracy.compute(np.array([[0, 1, 2, 3]]))[0] == 0.5
    assert accuracy.compute(np.array([[0, 0, 1]]))[0] == 1.0
    assert math.isnan(accuracy.compute(np.array([[1, 3]]))[0])
    assert stats.percentile_interval(np.array([np.nan, 1.0, 1.0])) == (1.0, 1.0)
    assert stats.percentile_interval(np.array([np.nan])) is None


def test_identical_models_differ_by_nothing_and_not_significantly():
    values = list(np.random.default_rng(1).random(30))
    indices = stats.resample_indices(30, 1000, seed=42)
    test = stats.paired(stats.mean_of(values), stats.mean_of(values), indices)
    assert test["difference"] == 0.0 and test["ci"] == [0.0, 0.0]
    assert (test["wins"], test["losses"], test["ties"]) == (0, 0, 30)
    assert test["p_value"] == 1.0 and not test["significant"] and test["better"] is None


def test_a_consistent_gain_is_significant_and_a_noisy_one_is_not():
    indices = stats.resample_indices(10, 1000, seed=42)
    base = stats.mean_of([0.0] * 10)
    test = stats.paired(stats.mean_of([1.0] * 10), base, indices)
    assert test["difference"] == 1.0 and test["ci"] == [1.0, 1.0]
    assert test["p_value"] == pytest.approx(2 / 1024) and test["significant"] and test["better"] == "tuned"
    # 6 wins, 4 losses of the same size: a +0.2 mean gain that 10 examples cannot tell from chance
    noisy = stats.paired(stats.mean_of([1.0] * 6 + [0.0] * 4), stats.mean_of([0.0] * 6 + [1.0] * 4), indices)
    assert noisy["difference"] == pytest.approx(0.2) and noisy["ci"][0] < 0 < noisy["ci"][1]
    assert (noisy["wins"], noisy["losses"]) == (6, 4) and noisy["p_value"] == pytest.approx(0.75390625)
    assert not noisy["significant"]


def test_lower_loss_is_a_win():
    indices = stats.resample_indices(8, 500, seed=42)
    tuned = replace(stats.ratio([1.0] * 8, [1] * 8), higher_is_better=False)
    base = replace(stats.ratio([3.0] * 8, [1] * 8), higher_is_better=False)
    test = stats.paired(tuned, base, indices)
    assert test["difference"] == -2.0 and test["wins"] == 8 and test["better"] == "tuned" and test["significant"]


REFERENCES = [f"ticket {i} is about billing and the priority is {'high' if i % 3 else 'low'}" for i in range(30)]
ANSWERS = [r if i % 2 else r.replace("billing", "shipping").replace("priority", "urgency")
           for i, r in enumerate(REFERENCES)]


def test_bleu_resamples_the_corpus_as_sacrebleu_scores_it():
    bleu = bleu_statistic(ANSWERS, REFERENCES)
    assert bleu.compute(np.arange(30)[None, :])[0] == pytest.approx(corpus_bleu(ANSWERS, REFERENCES))
    indices = stats.resample_indices(30, 5, seed=3)
    for row, value in zip(indices, bleu.compute(indices)):
        assert value == pytest.approx(corpus_bleu([ANSWERS[i] for i in row], [REFERENCES[i] for i in row]))
    assert bleu.per_example is None  # a corpus score has no per-example sign


def test_bleu_paired_difference_uses_the_bootstrap_interval():
    indices = stats.resample_indices(30, 1000, seed=42)
    same = stats.paired(bleu_statistic(ANSWERS, REFERENCES), bleu_statistic(ANSWERS, REFERENCES), indices)
    assert same["difference"] == 0.0 and same["p_value"] is None and not same["significant"]
    better = stats.paired(bleu_statistic(REFERENCES, REFERENCES), bleu_statistic(ANSWERS, REFERENCES), indices)
    assert better["test"] == "paired bootstrap" and better["ci"][0] > 0 and better["better"] == "tuned"
