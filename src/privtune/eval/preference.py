"""`privtune eval` on a preference dataset: how often each model ranks the held-out pairs as the data does.

- a language model (SFT, DPO, ...): preference accuracy, the share of pairs where it gives the chosen
  answer a higher log-probability than the rejected one (summed over the answer's tokens);
- a reward model: reward accuracy, the share where it scores the chosen answer higher;
- a language model against its baseline (a DPO model against its SFT parent, its reference): the
  implicit reward accuracy DPO optimises, where (log p_tuned - log p_base) is higher for the chosen answer.

Each figure gets a 95% bootstrap interval over the pairs, and tuned vs baseline the paired test, as
the sft eval's figures do (eval/stats.py).
"""

from __future__ import annotations

from privtune.eval import stats
from privtune.models.inference import LoadedModel
from privtune.models.scoring import answer_row, reward_scores
from privtune.ui import track

METRICS = ("preference_accuracy", "logp_margin", "reward_accuracy", "reward_margin", "implicit_reward_accuracy")


def log_probabilities(loaded: LoadedModel, rows: list[dict], batch_size: int) -> list[float]:
    """Summed log-probability of each row's marked tokens, batched as eval's loss pass is."""
    import torch

    from privtune.eval.stage import example_losses

    values = []
    with torch.no_grad():
        for start in track(range(0, len(rows), batch_size), f"log-probs {loaded.name}"):
            values += [-total for total, _ in example_losses(loaded, rows[start:start + batch_size])]
    return values


def evaluate_pairs(loaded: LoadedModel, pairs: list[dict], template: str, batch_size: int) -> dict[str, list]:
    """Per pair: chosen and rejected log-probabilities (a language model) or scores (a reward model)."""
    chosen = [answer_row(loaded, template, pair["prompt"], pair["chosen"]) for pair in pairs]
    rejected = [answer_row(loaded, template, pair["prompt"], pair["rejected"]) for pair in pairs]
    if getattr(loaded, "head", "lm") == "score":
        return {"score_chosen": reward_scores(loaded, chosen), "score_rejected": reward_scores(loaded, rejected)}
    return {"logp_chosen": log_probabilities(loaded, chosen, batch_size),
            "logp_rejected": log_probabilities(loaded, rejected, batch_size)}


def pair_statistics(values: dict[str, list]) -> dict[str, list[float]]:
    """Per-pair values of each metric this model has: 1/0 for a pair ranked as the data does, and the margin."""
    if "score_chosen" in values:
        margins = [c - r for c, r in zip(values["score_chosen"], values["score_rejected"])]
        return {"reward_accuracy": [float(m > 0) for m in margins], "reward_margin": margins}
    margins = [c - r for c, r in zip(values["logp_chosen"], values["logp_rejected"])]
    return {"preference_accuracy": [float(m > 0) for m in margins], "logp_margin": margins}


def implicit_reward(tuned: dict[str, list], baseline: dict[str, list]) -> list[float] | None:
    """1/0 per pair: does the tuned model raise the chosen answer's log-probability, relative to the baseline,
    more than the rejected one's (DPO's implicit reward, the baseline as its reference)?"""
    if "logp_chosen" not in tuned or "logp_chosen" not in baseline:
        return None
    return [float((tc - bc) - (tr - br) > 0) for tc, bc, tr, br in
            zip(tuned["logp_chosen"], baseline["logp_chosen"], tuned["logp_rejected"], baseline["logp_rejected"])]


def summarize(per_pair: dict[str, dict[str, list[float]]], resamples: int, seed: int) -> dict:
    """Means, 95% bootstrap intervals and the paired tuned-vs-baseline tests of the per-pair values."""
    models = {label: {m: sum(v) / len(v) for m, v in metrics.items()} for label, metrics in per_pair.items()}
    examples = len(next(iter(next(iter(per_pair.values())).values())))
    intervals, paired = {}, {}
    if resamples and examples:
        indices = stats.resample_indices(examples, resamples, seed)
        statistic = {label: {m: stats.mean_of(v) for m, v in metrics.items()} for label, metrics in per_pair.items()}
        intervals = {label: {m: list(stats.interval(s, indices) or []) for m, s in metrics.items()}
                     for label, metrics in statistic.items()}
        if "baseline" in statistic:
            paired = {m: stats.paired(statistic["tuned"][m], statistic["baseline"][m], indices)
                      for m in statistic["tuned"] if m in statistic["baseline"]}
    return {"models": models, "intervals": intervals, "paired": paired}


def report(model: str, baseline: str | None, dataset_id: str, metrics: dict) -> str:
    """report.md of a preference eval."""
    labels = list(metrics["models"])
    lines = [f"# Preference evaluation of {model}", "", f"Baseline: {baseline or '(none)'}. Data: dataset "
             f"{dataset_id}, {metrics['split']} split, {metrics['examples']} pairs.", "",
             "| metric | " + " | ".join(metrics["labels"][label] for label in labels) + " | tuned − base |",
             "|---|" + "---|" * (len(labels) + 1)]
    for metric in METRICS:
        if not any(metric in metrics["models"][label] for label in labels):
            continue
        cells = []
        for label in labels:
            value = metrics["models"][label].get(metric)
            low_high = metrics["intervals"].get(label, {}).get(metric)
            cells.append("-" if value is None else f"{value:.3f}" + (f" [{low_high[0]:.3f}, {low_high[1]:.3f}]"
                                                                    if low_high else ""))
        test = metrics["paired"].get(metric)
        p_value = f" (sign test p {test['p_value']:.3g})" if test and test.get("p_value") is not None else ""
        cells.append(f"{test['difference']:+.3f}{p_value}" if test and test["difference"] is not None else "")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += ["", "preference_accuracy: log p(chosen) > log p(rejected); reward_accuracy: score(chosen) > "
              "score(rejected); implicit_reward_accuracy: the tuned model raises the chosen answer above the "
              "baseline's more than the rejected one (DPO's reward, the baseline as reference). [low, high]: 95% "
              "bootstrap interval over the pairs."]
    return "\n".join(lines) + "\n"
