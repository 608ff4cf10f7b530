"""The eval table, written once: `privtune eval`'s report.md and the terminal table of `privtune eval` and
`privtune compare` take their rows (figures with intervals, paired tests, lm-eval scores) from here.

Rows follow the answer metric registry (eval/metrics.py), so a new metric module shows up in both
without a change here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from privtune.eval.metrics import Metric, answer_metrics

if TYPE_CHECKING:
    from privtune.artifacts import Artifact


def table_metrics(answer: Iterable[Metric] | None = None) -> tuple[str, ...]:
    """Row order: held-out loss, the answer metrics by `order`, then how often generation stopped on its own."""
    answer = answer_metrics().values() if answer is None else sorted(answer, key=lambda m: (m.order, m.name))
    return ("loss", "perplexity", *(m.name for m in answer), "stopped_before_limit")


TABLE_METRICS = table_metrics()
ROLES = {"tuned": "tuned", "baseline": "base"}
ARTIFACT_ID = re.compile(r"[0-9a-f]{12}")


def model_label(role: str, ref: str | None) -> str:
    """'tuned (model 3f2a1b2c)', 'base (SmolLM2-135M-Instruct)': which model a column holds, at a glance."""
    if not ref:
        return role
    name = f"model {ref[:8]}" if ARTIFACT_ID.fullmatch(ref) else (Path(ref).name or ref)
    return f"{role} ({name if len(name) <= 28 else name[:27] + '…'})"


def model_labels(model: str | None, baseline: str | None) -> dict[str, str]:
    return {label: model_label(role, ref) for (label, role), ref in zip(ROLES.items(), (model, baseline))}


def labels_of(manifest: dict) -> dict[str, str]:
    """Column labels of an eval artifact (computed for artifacts written before labels were stored)."""
    return manifest["metrics"].get("labels") or model_labels(manifest.get("model"), manifest.get("baseline"))


def cell(value, interval: list[float] | None = None) -> str:
    """'0.8000 [0.70, 0.89]': a figure and its 95% interval."""
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.4f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def difference_cell(test: dict) -> str:
    """'+0.4500 [+0.30, +0.60]': tuned minus baseline and its paired 95% interval."""
    if test.get("difference") is None:
        return "-"
    ci = test.get("ci")
    return f"{test['difference']:+.4f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def signs_cell(test: dict) -> str:
    return f"{test['wins']}/{test['losses']}/{test['ties']}" if test.get("test") == "sign test" else "-"


def verdict(test: dict) -> str:
    """Whether the difference is significant at 0.05, which model is ahead, and the evidence."""
    if test.get("p_value") is not None:
        evidence = f"p={test['p_value']:.3g}"
    else:
        evidence = "CI excludes 0" if test["significant"] else "CI includes 0"
    return f"yes, {ROLES[test['better']]} better ({evidence})" if test["significant"] else f"no ({evidence})"


def judge_cell(judge: dict) -> str:
    return f"{judge['win_rate']:.3f} [{judge['ci_low']:.2f}, {judge['ci_high']:.2f}] n={judge['decided']}"


def metric_rows(evals: list[dict], names: Sequence[str] = TABLE_METRICS) -> list[tuple[str, list[str], list]]:
    """Per metric some model has: a cell per model (each eval's models in turn) and each paired eval's test
    (None where it has none for this metric). `evals` are the `metrics` of eval manifests."""
    columns = [(metrics, label) for metrics in evals for label in metrics["models"]]
    paired = [metrics["paired"] for metrics in evals if metrics.get("paired")]
    rows = []
    for name in names:
        values = [metrics["models"][label].get(name) for metrics, label in columns]
        if any(v is not None for v in values):
            cells = [cell(v, (metrics.get("intervals") or {}).get(label, {}).get(name))
                     for v, (metrics, label) in zip(values, columns)]
            rows.append((name, cells, [tests.get(name) for tests in paired]))
    return rows


def table_rows(metrics: dict, names: Sequence[str] = TABLE_METRICS) -> list[tuple[str, ...]]:
    """One eval's rows: each model's figure with its interval, then the paired difference, signs and verdict."""
    rows = []
    for name, cells, tests in metric_rows([metrics], names):
        for test in tests:
            cells += [difference_cell(test), signs_cell(test), verdict(test)] if test else ["-"] * 3
        rows.append((name, *cells))
    return rows


def harness_rows(columns: list[dict], stderr: bool = True) -> list[tuple[str, str, list[str]]]:
    """(task, metric, a cell per model) for each lm-eval score; `columns` are each model's {task: scores}."""
    rows = []
    for task in dict.fromkeys(t for scores in columns for t in scores):
        for metric in dict.fromkeys(m for scores in columns for m in scores.get(task, {}) if "_stderr" not in m):
            cells = []
            for scores in columns:
                value = scores.get(task, {}).get(metric)
                error = scores.get(task, {}).get(metric.replace(",", "_stderr,", 1)) if stderr else None
                cells.append("-" if value is None else f"{value:.4f}" + (f" ± {error:.4f}" if error else ""))
            rows.append((task, metric.split(",")[0], cells))
    return rows


def significance_summary(metrics: dict) -> list[str]:
    """Which differences this many examples can and cannot tell apart, and how the table was computed."""
    paired, n = metrics.get("paired") or {}, metrics["examples"]
    groups = {"tuned better": [], "base better": [], "no significant difference": []}
    for metric, test in paired.items():
        groups[f"{ROLES[test['better']]} better" if test["significant"] else "no significant difference"].append(metric)
    lines = [f"On these {n} examples, at the 0.05 level: "
             + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items() if v) + "."] if paired else []
    boot = metrics.get("bootstrap") or {}
    if metrics.get("intervals"):
        lines.append(f"[low, high]: 95% percentile bootstrap interval over the {n} examples ({boot.get('resamples')} "
                     f"resamples, seed {boot.get('seed')}); loss resamples examples with their trained tokens, BLEU "
                     "the corpus. tuned − base: the paired difference on the same resamples; wins/losses/ties "
                     "per example; significant: two-sided exact sign test p < 0.05, ties dropped (BLEU, a corpus "
                     "score: the paired interval excludes 0). Lower is better for loss and perplexity.")
    return lines


def report(model: str, baseline: str | None, dataset: Artifact, metrics: dict, notes: list[str], chart: bool) -> str:
    """report.md of one eval."""
    labels = [metrics["labels"][label] for label in metrics["models"]]
    if metrics.get("paired"):
        labels += ["tuned − base [95% CI]", "wins/losses/ties", "significant at 0.05"]
    lines = [f"# Evaluation of {model}", "", f"Baseline: {baseline or '(none)'}. Data: dataset {dataset.id}, "
             f"{metrics['split']} split, {metrics['examples']} examples.", "",
             "| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(metrics)]
    lines += [line for paragraph in significance_summary(metrics) for line in ("", paragraph)]
    if metrics.get("judge"):
        j = metrics["judge"]
        lines += ["", f"Judge {j['model']}: tuned win rate {j['win_rate']:.3f} "
                      f"(95% CI {j['ci_low']:.3f}-{j['ci_high']:.3f}) over {j['decided']} judged pairs; "
                      f"{j['unparsed']} unparsed; order swapped on half."]
    if metrics.get("lm_eval"):
        harness = metrics["lm_eval"]
        lines += ["", "lm-evaluation-harness:", "", "| task | metric | " + " | ".join(harness) + " |",
                  "|---|---|" + "---|" * len(harness)]
        lines += ["| " + " | ".join([task, metric, *cells]) + " |"
                  for task, metric, cells in harness_rows(list(harness.values()))]
    lines += ["", *[f"- {n}" for n in notes]]
    if chart:
        lines += ["", "![comparison](comparison.png)"]
    lines += ["", "![training loss](loss_curve.png)"]
    return "\n".join(lines) + "\n"


def compare_table(artifacts: list[Artifact]):
    """The terminal table of one or more evals side by side (a rich Table): the report's rows, one
    column per model of each eval, the paired difference and verdict in one cell per paired eval."""
    from rich.markup import escape
    from rich.table import Table

    evals = [a.manifest["metrics"] for a in artifacts]
    columns = [(a, label) for a in artifacts for label in a.manifest["metrics"]["models"]]
    paired = [a for a in artifacts if a.manifest["metrics"].get("paired")]
    where = (lambda a: f"\neval {a.id[:8]}") if len(artifacts) > 1 else (lambda a: "")
    sizes = " / ".join(dict.fromkeys(str(metrics["examples"]) for metrics in evals))
    caption = (f"[low, high]: 95% bootstrap interval over {sizes} examples; tuned − base: paired difference; "
               "significant: sign test p < 0.05 (bleu: interval excludes 0)"
               if any(metrics.get("intervals") for metrics in evals) else None)
    table = Table("metric", *[escape(labels_of(a.manifest)[label].replace(" (", "\n(", 1) + where(a))
                              for a, label in columns],
                  *[f"tuned − base{where(a)}" for a in paired], title="eval", caption=caption and escape(caption))
    for name, cells, tests in metric_rows(evals):
        table.add_row(name, *map(escape, cells),
                      *(escape(f"{difference_cell(t)}\n{verdict(t)}") if t else "-" for t in tests))
    harness = [(a.manifest["metrics"].get("lm_eval") or {}).get(label, {}) for a, label in columns]
    for task, metric, cells in harness_rows(harness, stderr=False):
        table.add_row(escape(f"{task} {metric}"), *cells)
    for a in artifacts:
        if a.manifest["metrics"].get("judge"):
            table.add_row(f"judge win rate ({a.id[:8]})", judge_cell(a.manifest["metrics"]["judge"]))
    return table
