"""`privtune eval`: the tuned model against its baseline on held-out data, in one run.

Held-out loss and perplexity on the trained tokens, then greedy generation on the held-out
prompts scored against the references (ROUGE-L, BLEU, exact/normalised match, JSON fields), and
optionally a pairwise LLM judge with the order swapped on half the pairs.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from privtune.artifacts import Artifact, Workspace, stable_hash, write_atomic, write_json_atomic
from privtune.config import ConfigValueError, config_dict
from privtune.errors import PrivtuneError
from privtune.eval.metrics import corpus_bleu, mean, score
from privtune.models.inference import LoadedModel, load_for_inference
from privtune.ui import quiet_libraries, track


@dataclass
class EvalConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 16
    limit: int = 0
    """Evaluate at most this many examples (0: all)."""
    seed: int = 42
    lm_eval_chat_template: bool = False
    """Wrap lm-eval prompts in the model's chat template (fairer to a chat fine-tune)."""

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.limit < 0:
            raise ConfigValueError("max_new_tokens", "max_new_tokens and batch_size must be >= 1, limit >= 0")


def find_dataset(trained: Artifact | None, data: str | None, workspace: Workspace) -> Artifact:
    """--data, or the dataset the model was trained on (its lineage)."""
    if data:
        artifact = workspace.resolve(data)
        if artifact is None or artifact.kind != "dataset":
            raise PrivtuneError(f"no dataset artifact '{data}'", field="--data", hint="privtune runs lists them")
        return artifact
    parents = trained.manifest.get("parents", []) if trained else []
    for parent in parents:
        artifact = workspace.resolve(parent)
        if artifact is not None and artifact.kind == "dataset":
            return artifact
    raise PrivtuneError("no --data given and the model has no dataset in its lineage", field="--data")


def split_rows(dataset: Artifact, limit: int) -> tuple[str, list[dict], list]:
    """The test split (validation if test is empty) as schema rows and tokenized rows."""
    import pyarrow.parquet as pq

    for split in ("test", "validation"):
        rows = [json.loads(l) for l in (dataset.path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        if rows:
            tokenized = pq.read_table(dataset.path / "tokenized" / f"{split}.parquet").to_pylist()
            cut = limit or len(rows)
            return split, rows[:cut], tokenized[:cut]
    raise PrivtuneError(f"dataset {dataset.id} has no test or validation examples", field="--data")


def held_out_loss(loaded: LoadedModel, tokenized: list[dict]) -> dict:
    """Mean loss per trained token, and its perplexity."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for row in track(tokenized, f"loss {loaded.name}"):
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor([[t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"])]])
            trained = int((labels[:, 1:] != -100).sum())
            if trained == 0:
                continue
            loss = loaded.model(input_ids=ids, labels=labels).loss
            total += float(loss) * trained
            count += trained
    loss = total / count if count else None
    return {"loss": loss, "perplexity": math.exp(loss) if loss is not None and loss < 50 else None}


def generate_answers(loaded: LoadedModel, prompts: list[list[dict]], config: EvalConfig) -> list[tuple[str, bool]]:
    """Batched generation with left padding; greedy unless a temperature is set.

    Returns each answer and whether it ended with the end-of-turn token (rather than the limit).
    """
    import torch

    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    sampling = {"do_sample": config.temperature > 0}
    if config.temperature > 0:
        sampling.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k or None)
    answers = []
    torch.manual_seed(config.seed)
    for start in track(range(0, len(texts), config.batch_size), f"generating {loaded.name}",
                       total=-(-len(texts) // config.batch_size)):
        batch = tokenizer(texts[start: start + config.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False)
        with torch.no_grad():
            out = loaded.model.generate(**batch, max_new_tokens=config.max_new_tokens,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                        **sampling)
        new = out[:, batch["input_ids"].shape[1]:]
        answers += [(tokenizer.decode(ids, skip_special_tokens=True).strip(),
                     bool((ids == tokenizer.eos_token_id).any())) for ids in new]
    return answers


def evaluate_model(loaded: LoadedModel, rows: list[dict], tokenized: list[dict], config: EvalConfig) -> tuple[dict, list[str]]:
    metrics = held_out_loss(loaded, tokenized)
    has_references = all(r["messages"][-1]["role"] == "assistant" for r in rows)
    if not has_references:
        return metrics, []
    generated = generate_answers(loaded, [r["messages"][:-1] for r in rows], config)
    answers = [answer for answer, _ in generated]
    references = [r["messages"][-1]["content"] for r in rows]
    per_example = [score(a, ref) for a, ref in zip(answers, references)]
    for key in per_example[0] if per_example else []:
        metrics[key] = mean([s[key] for s in per_example if key in s])
    metrics["bleu"] = corpus_bleu(answers, references)
    metrics["stopped_before_limit"] = mean([float(stopped) for _, stopped in generated])
    return metrics, answers


def run(model: str, config: EvalConfig, workspace: Workspace, *, baseline: str | None = None,
        data: str | None = None, judge=None, lm_eval: list[str] | None = None, lm_eval_include: Path | None = None,
        force: bool = False) -> tuple[Artifact, bool]:
    quiet_libraries()
    if lm_eval:
        from privtune.eval.harness import check_tasks

        check_tasks(lm_eval, lm_eval_include)  # before minutes of loading and generating
    tuned = load_for_inference(model, workspace)
    trained = workspace.resolve(tuned.artifact_id) if tuned.artifact_id else None
    dataset = find_dataset(trained, data, workspace)
    if baseline is None and trained is not None:
        baseline = trained.manifest.get("base_model")
    artifact_id = stable_hash({"stage": "eval", "model": tuned.name, "baseline": baseline, "data": dataset.id,
                               "config": config_dict(config), "judge": judge.describe() if judge else None,
                               "lm_eval": lm_eval, "lm_eval_tasks": folder_digest(lm_eval_include)})
    existing = workspace.get("eval", artifact_id)
    if existing and not force:
        return existing, True
    split, rows, tokenized = split_rows(dataset, config.limit)
    staging = workspace.stage("eval", artifact_id)
    results, answers, harness = {}, {}, {}
    for label, ref in (("tuned", tuned), ("baseline", baseline)):
        if ref is None:
            continue
        loaded = ref if isinstance(ref, LoadedModel) else load_for_inference(ref, workspace)
        results[label], answers[label] = evaluate_model(loaded, rows, tokenized, config)
        if lm_eval:
            from privtune.eval.harness import run_harness

            harness[label] = run_harness(loaded, lm_eval, lm_eval_include, batch_size=config.batch_size,
                                         limit=config.limit, chat_template=config.lm_eval_chat_template,
                                         seed=config.seed)
        write_json_atomic(staging.path / "metrics.json", results)  # partial results survive a later failure
    notes = [] if answers.get("tuned") else ["the data has no reference answers: generation metrics skipped"]
    judge_summary = None
    if judge is not None and answers.get("tuned") and answers.get("baseline"):
        from privtune.eval.judge import run_judge

        judge_summary = run_judge(judge, rows, answers["tuned"], answers["baseline"], staging.path, config.seed)
    write_samples(staging.path / "samples.jsonl", rows, answers, results)
    if trained is not None and (trained.path / "loss_curve.png").is_file():
        shutil.copy(trained.path / "loss_curve.png", staging.path / "loss_curve.png")
    chart = plot_comparison(results, staging.path / "comparison.png")
    metrics = {"split": split, "examples": len(rows), "models": results, "judge": judge_summary,
               "lm_eval": harness or None}
    write_json_atomic(staging.path / "metrics.json", metrics)
    write_atomic(staging.path / "report.md", report(tuned.name, baseline, dataset, metrics, notes, chart is not None))
    parents = [p for p in (tuned.artifact_id, dataset.id) if p]
    manifest = {"stage": "eval", "parents": parents, "model": tuned.name, "baseline": baseline,
                "dataset": dataset.id, "config": config_dict(config), "seed": config.seed, "metrics": metrics,
                "notes": notes, "judge": judge.describe() if judge else None}
    return staging.finish(manifest), False


def folder_digest(folder: Path | None) -> str | None:
    """Task YAMLs and data files change the scores, so they are part of the eval's identity."""
    if folder is None or not folder.is_dir():
        return None
    import hashlib

    return stable_hash({str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(folder.rglob("*")) if p.is_file()})


def write_samples(path: Path, rows: list[dict], answers: dict, results: dict) -> None:
    lines = []
    for index, row in enumerate(rows):
        sample = {"prompt": row["messages"][:-1], "reference": row["messages"][-1]["content"]}
        for label, outputs in answers.items():
            if outputs:
                sample[label] = {"output": outputs[index], **score(outputs[index], sample["reference"])}
        lines.append(json.dumps(sample, ensure_ascii=False))
    write_atomic(path, "\n".join(lines) + "\n")


TABLE_METRICS = ("loss", "perplexity", "rouge_l", "bleu", "exact_match", "normalized_match", "json_field_accuracy",
                 "stopped_before_limit")


def table_rows(results: dict) -> list[tuple[str, ...]]:
    labels = list(results)
    rows = []
    for metric in TABLE_METRICS:
        values = [results[label].get(metric) for label in labels]
        if any(v is not None for v in values):
            rows.append((metric, *(f"{v:.4f}" if isinstance(v, float) else "-" for v in values)))
    return rows


def harness_rows(harness: dict) -> list[tuple[str, ...]]:
    """One row per task and metric (stderr folded in), one column per model."""
    labels = list(harness)
    first = harness[labels[0]]
    rows = []
    for task, scores in first.items():
        for metric in (m for m in scores if "_stderr" not in m):
            cells = []
            for label in labels:
                value = harness[label].get(task, {}).get(metric)
                stderr = harness[label].get(task, {}).get(metric.replace(",", "_stderr,", 1))
                cells.append("-" if value is None else f"{value:.4f}" + (f" ± {stderr:.4f}" if stderr else ""))
            rows.append((task, metric.split(",")[0], *cells))
    return rows


def report(model: str, baseline: str | None, dataset: Artifact, metrics: dict, notes: list[str], chart: bool) -> str:
    labels = list(metrics["models"])
    lines = [f"# Evaluation of {model}", "", f"Baseline: {baseline or '(none)'}. Data: dataset {dataset.id}, "
             f"{metrics['split']} split, {metrics['examples']} examples.", "",
             "| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(metrics["models"])]
    if metrics.get("judge"):
        j = metrics["judge"]
        lines += ["", f"Judge {j['model']}: tuned win rate {j['win_rate']:.3f} "
                      f"(95% CI {j['ci_low']:.3f}-{j['ci_high']:.3f}) over {j['decided']} judged pairs; "
                      f"{j['unparsed']} unparsed; order swapped on half."]
    if metrics.get("lm_eval"):
        lines += ["", "lm-evaluation-harness:", "", "| task | metric | " + " | ".join(metrics["lm_eval"]) + " |",
                  "|---|---|" + "---|" * len(metrics["lm_eval"])]
        lines += ["| " + " | ".join(row) + " |" for row in harness_rows(metrics["lm_eval"])]
    lines += ["", *[f"- {n}" for n in notes]]
    if chart:
        lines += ["", "![comparison](comparison.png)"]
    lines += ["", "![training loss](loss_curve.png)"]
    return "\n".join(lines) + "\n"


def plot_comparison(results: dict, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("rouge_l", "exact_match", "normalized_match", "json_field_accuracy")
               if any(results[l].get(m) is not None for l in results)]
    if not metrics:
        return None
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    width = 0.8 / len(results)
    for offset, (label, values) in enumerate(results.items()):
        axes.bar([i + offset * width for i in range(len(metrics))], [values.get(m) or 0 for m in metrics], width,
                 label=label)
    axes.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(metrics))], metrics)
    axes.set_ylim(0, 1)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out
