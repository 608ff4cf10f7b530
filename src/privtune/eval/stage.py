"""`privtune eval`: the tuned model against its baseline on held-out data, in one run.

Held-out loss and perplexity on the trained tokens, then greedy generation on the held-out prompts
scored against the references (ROUGE-L, BLEU, exact/normalised match, JSON fields: one module each in
eval/answer_metrics/), and optionally a pairwise LLM judge with the order swapped on half the pairs.
Every figure gets a 95% bootstrap interval over the examples, and tuned vs baseline a paired test
(eval/stats.py), so a report on a few dozen examples says whether its difference is more than the luck
of the draw. The tables are eval/report.py's.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

from pydantic import model_validator

from privtune.artifacts import Artifact, Result, Workspace, stable_hash, write_atomic, write_json_atomic
from privtune.config import Config, ConfigValueError, config_dict
from privtune.contract import ModelArtifact
from privtune.errors import PrivtuneError
from privtune.eval import stats
from privtune.eval.metrics import answer_metrics, mean, score
from privtune.eval.report import ARTIFACT_ID, TABLE_METRICS, model_labels, report
from privtune.eval.report import cell, labels_of, model_label, table_rows  # noqa: F401 (stage.cell etc. still work)
from privtune.models.generation import generate_answers, until_stop  # noqa: F401 (eval's, and tests')
from privtune.models.inference import LoadedModel, load_for_inference
from privtune.runtime import start_following_load
from privtune.contract import find_dataset, split_rows
from privtune.ui import quiet_libraries, track


class EvalConfig(Config):
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
    bootstrap: int = 1000
    """Bootstrap resamples of the examples for the 95% intervals and paired differences (seeded by
    `seed`). With 1000 an interval end moves by ~0.01 between seeds on 16 examples, ~0.003 on 200
    (200 resamples: 0.03 / 0.007); every interval and paired test for 500 examples takes ~0.2 s. 0: none."""

    @model_validator(mode="after")
    def check(self):
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.limit < 0:
            raise ConfigValueError("max_new_tokens", "max_new_tokens and batch_size must be >= 1, limit >= 0")
        if self.bootstrap < 0:
            raise ConfigValueError("bootstrap", "bootstrap must be >= 0 (0: no intervals)")
        return self


def held_out_loss(loaded: LoadedModel, tokenized: list[dict], batch_size: int = 16,
                  follower=None) -> tuple[dict, list[tuple[float, int]]]:
    """Mean loss per trained token and its perplexity, and each example's (summed loss, trained tokens).

    Batched (right-padded, padding masked out of attention and loss), in length order so a batch
    pads little. The per-example sums let the bootstrap resample examples and recompute the
    token-weighted mean.
    """
    import torch

    order = sorted(range(len(tokenized)), key=lambda i: len(tokenized[i]["input_ids"]))
    per_example: list[tuple[float, int]] = [(0.0, 0)] * len(tokenized)
    vocabulary = int(getattr(loaded.model.config, "vocab_size", 0) or 50_000)
    batches = loss_batches([len(tokenized[i]["input_ids"]) for i in order], order, batch_size, vocabulary)
    with torch.no_grad():
        for number, batch in enumerate(track(batches, f"loss {loaded.name}")):
            if follower:
                follower.follow(number)
            for index, sums in zip(batch, example_losses(loaded, [tokenized[i] for i in batch])):
                per_example[index] = sums
    return loss_figures(per_example), per_example


def loss_figures(per_example: list[tuple[float, int]]) -> dict:
    """Mean loss per trained token over the examples' (summed loss, trained tokens), and its perplexity."""
    total, count = sum(s for s, _ in per_example), sum(c for _, c in per_example)
    loss = total / count if count else None
    return {"loss": loss, "perplexity": math.exp(loss) if loss is not None and loss < 50 else None}


LOGITS_BUDGET = 64 * 2**20
"""Logit values one loss batch may hold (256 MB in float32; cross-entropy needs a few such buffers):
a 152k vocabulary at 1,024 tokens is ~156M values a row, so long rows of big vocabularies go one at a time."""


def loss_batches(lengths: list[int], order: list[int], batch_size: int, vocabulary: int) -> list[list[int]]:
    """Consecutive runs of `order` (sorted by length) of at most `batch_size` rows and LOGITS_BUDGET values."""
    batches: list[list[int]] = []
    for length, index in zip(lengths, order):
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * length * vocabulary <= LOGITS_BUDGET:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def example_losses(loaded: LoadedModel, rows: list[dict]) -> list[tuple[float, int]]:
    """(summed next-token loss over trained tokens, trained tokens) of each row, in one forward pass.

    Rows are padded on the left, so every row's trained tokens (its last reply) sit in the last columns,
    and the output head runs only there (`logits_to_keep`): over a 49K vocabulary, logits at every prompt
    position cost more than the rest of the pass.
    """
    import torch

    if loaded.model.config.is_encoder_decoder:
        return [single_example_loss(loaded, row) for row in rows]
    width = max(len(r["input_ids"]) for r in rows)
    pad = loaded.tokenizer.pad_token_id or 0
    padding = [width - len(r["input_ids"]) for r in rows]
    ids = torch.tensor([[pad] * n + r["input_ids"] for n, r in zip(padding, rows)])
    attention = torch.tensor([[0] * n + [1] * len(r["input_ids"]) for n, r in zip(padding, rows)])
    trained = torch.tensor([[0] * n + list(r["assistant_masks"]) for n, r in zip(padding, rows)])
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)  # as without padding
    first = [int(t.nonzero()[0]) if t.any() else width for t in trained]
    keep = max(1, width - max(0, min(first) - 1))  # from the position that predicts the first trained token
    device = loaded.model.device
    logits = loaded.model(input_ids=ids.to(device), attention_mask=attention.to(device),
                          position_ids=positions.to(device), logits_to_keep=keep).logits.float()
    targets, weights = ids[:, width - keep + 1:].to(device), trained[:, width - keep + 1:].to(device)
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
    sums = (losses * weights).sum(dim=1).tolist()
    return [(total, int(count)) for total, count in zip(sums, weights.sum(dim=1).tolist())]


def single_example_loss(loaded: LoadedModel, row: dict) -> tuple[float, int]:
    """One row through the model's own loss (encoder-decoder models compute theirs differently)."""
    import torch

    ids = torch.tensor([row["input_ids"]], device=loaded.model.device)
    labels = torch.tensor([[t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"])]],
                          device=loaded.model.device)
    trained = int((labels[:, 1:] != -100).sum())
    return (float(loaded.model(input_ids=ids, labels=labels).loss) * trained if trained else 0.0), trained


def losses_from_prompt_cache(loaded: LoadedModel, tokenized: list[dict], found: dict[int, tuple[float, int]]):
    """An `after_batch` for generate_answers: each row's held-out loss from the key/value cache generation
    left, so the prompt's tokens (most of a row) go through the model once, not twice.

    The cache is cut back to all but the prompt's last token; that token and the reference reply then run
    on it, and their logits score the reply. A batch where a row's prompt is not the start of its
    tokenized row, or trains on a token before the reply (an earlier assistant turn), or whose cache
    cannot be cut (some attention layouts), is left out of `found` for the plain loss pass.
    """
    import torch

    def after_batch(indices, inputs, cache) -> None:
        width = inputs["input_ids"].shape[1]
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        rows = [tokenized[i] for i in indices]
        if not all(row["input_ids"][:len(p)] == p and not any(row["assistant_masks"][:len(p)]) and
                   any(row["assistant_masks"]) for row, p in zip(rows, prompts)) or not hasattr(cache, "crop"):
            return
        try:
            cache.crop((width - 1) - cache.get_seq_length())  # transformers 5: a negative count to remove
        except (ValueError, NotImplementedError):
            return
        tails = [row["input_ids"][len(p) - 1:] for row, p in zip(rows, prompts)]
        trained = [row["assistant_masks"][len(p) - 1:] for row, p in zip(rows, prompts)]
        span = max(len(t) for t in tails)
        pad = loaded.tokenizer.pad_token_id or 0
        device = loaded.model.device
        ids = torch.tensor([t + [pad] * (span - len(t)) for t in tails], device=device)
        attention = torch.cat([inputs["attention_mask"][:, :width - 1],
                               torch.tensor([[1] * len(t) + [0] * (span - len(t)) for t in tails], device=device)], 1)
        positions = torch.tensor([[len(p) - 1 + j for j in range(span)] for p in prompts], device=device)
        weights = torch.tensor([m[1:] + [0] * (span - len(m)) for m in trained], device=device)
        with torch.no_grad():
            logits = loaded.model(input_ids=ids, attention_mask=attention, position_ids=positions,
                                  past_key_values=cache, use_cache=True).logits.float()
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        for index, total, count in zip(indices, (losses * weights).sum(1).tolist(), weights.sum(1).tolist()):
            found[index] = (total, int(count))

    return after_batch


def evaluate_model(loaded: LoadedModel, rows: list[dict], tokenized: list[dict], config: EvalConfig,
                   follower=None) -> tuple[dict, list[str], dict[str, stats.Statistic]]:
    """The model's figures, its answers, and each figure as a statistic the bootstrap can recompute.
    `follower` (runtime.ThreadsFollower) keeps the thread count to the cores others leave free.

    Generation runs first; the held-out loss reuses its prompt cache where it can (losses_from_prompt_cache)
    and runs the plain loss pass for the rest."""
    has_references = all(r["messages"][-1]["role"] == "assistant" for r in rows)
    generated, found = [], {}
    if has_references:
        fused = None if loaded.model.config.is_encoder_decoder else losses_from_prompt_cache(loaded, tokenized, found)
        generated = generate_answers(loaded, [r["messages"][:-1] for r in rows], config, follower, fused)
    rest = [i for i in range(len(tokenized)) if i not in found]
    rest_losses = held_out_loss(loaded, [tokenized[i] for i in rest], config.batch_size, follower)[1] if rest else []
    losses = [found[i] if i in found else None for i in range(len(tokenized))]
    for index, sums in zip(rest, rest_losses):
        losses[index] = sums
    metrics = loss_figures(losses)
    loss = replace(stats.ratio([s for s, _ in losses], [c for _, c in losses]), higher_is_better=False)
    statistics = {"loss": loss, "perplexity": perplexity_of(loss)}
    if not has_references:
        return metrics, [], statistics
    answers = [answer for answer, _ in generated]
    references = [r["messages"][-1]["content"] for r in rows]
    registered = answer_metrics().values()
    for metric in (m for m in registered if m.per_example):
        values = [metric.per_example(a, ref) for a, ref in zip(answers, references)]
        if any(v is not None for v in values):
            metrics[metric.name] = mean([v for v in values if v is not None])
            statistics[metric.name] = replace(stats.mean_of(values), higher_is_better=metric.higher_is_better)
    for metric in (m for m in registered if m.corpus):  # after the per-example ones, as metrics.json has them
        metrics[metric.name], statistic = metric.corpus(answers, references)
        statistics[metric.name] = replace(statistic, higher_is_better=metric.higher_is_better)
    metrics["stopped_before_limit"] = mean([float(stopped) for _, stopped in generated])
    statistics["stopped_before_limit"] = stats.mean_of([float(stopped) for _, stopped in generated])
    return metrics, answers, statistics


def perplexity_of(loss: stats.Statistic) -> stats.Statistic:
    """exp of the resampled loss (undefined past exp(50), as the figure itself); signs follow the loss."""
    import numpy as np

    def compute(indices):
        values = loss.compute(indices)
        return np.exp(np.where(values < 50, values, np.nan))

    return stats.Statistic(compute, loss.per_example, higher_is_better=False)


def uncertainty(statistics: dict[str, dict[str, stats.Statistic]], results: dict, examples: int,
                config: EvalConfig) -> tuple[dict, dict]:
    """95% intervals per model and metric, and the paired tuned-vs-baseline test per metric.

    One set of resample indices serves every metric and both models, so differences are paired.
    """
    if not config.bootstrap or not examples:
        return {}, {}
    indices = stats.resample_indices(examples, config.bootstrap, config.seed)
    shown = {label: [m for m in TABLE_METRICS if results[label].get(m) is not None] for label in results}
    intervals = {label: {m: listed(stats.interval(statistics[label][m], indices)) for m in metrics}
                 for label, metrics in shown.items()}
    if "baseline" not in statistics:
        return intervals, {}
    common = [m for m in shown["tuned"] if m in shown["baseline"]]
    return intervals, {m: stats.paired(statistics["tuned"][m], statistics["baseline"][m], indices) for m in common}


def listed(interval: tuple[float, float] | None) -> list[float] | None:
    return list(interval) if interval else None


def run(model: str, config: EvalConfig, workspace: Workspace, *, baseline: str | None = None,
        data: str | None = None, judge=None, lm_eval: list[str] | None = None, lm_eval_include: Path | None = None,
        force: bool = False) -> Result:
    quiet_libraries()
    if lm_eval:
        from privtune.eval.harness import check_tasks

        check_tasks(lm_eval, lm_eval_include)  # before minutes of loading and generating
    tuned = load_for_inference(model, workspace)
    trained = ModelArtifact.of(workspace.resolve(tuned.artifact_id)) if tuned.artifact_id else None
    dataset = find_dataset(trained, data, workspace)
    if dataset.examples not in ("sft", "preference"):
        raise PrivtuneError(f"dataset {dataset.id} holds {dataset.examples} examples; eval scores answers against "
                            "conversations, or ranks preference pairs", field="--data", hint="pass --data with an sft "
                            "dataset (its held-out split), e.g. the one the SFT parent was trained on")
    if dataset.examples == "preference" and (judge or lm_eval):
        sft_parents = [p for p in dataset.parents if (found := workspace.get("dataset", p))
                       and found.manifest.get("examples", "sft") == "sft"]
        raise PrivtuneError("a judge and lm-eval score generated answers; on a preference dataset eval ranks its "
                            "held-out pairs", field="--judge-url" if judge else "--lm-eval",
                            hint=f"pass --data with an sft dataset for judged answers"
                                 + (f", e.g. --data {sft_parents[0]} (the prompts these pairs answer)"
                                    if sft_parents else ""))
    if baseline is None and trained is not None and trained.head == "lm":  # a reward model ranks alone
        baseline = trained.base_model
    artifact_id = stable_hash({"stage": "eval", "model": tuned.name, "baseline": baseline, "data": dataset.id,
                               "config": config_dict(config), "judge": judge.describe() if judge else None,
                               "lm_eval": lm_eval, "lm_eval_tasks": folder_digest(lm_eval_include)})
    existing = None if force else workspace.get("eval", artifact_id)
    if existing and not force:
        return Result(existing, reused=True)
    if dataset.examples == "preference":
        return preference_eval(tuned, baseline, dataset, config, workspace, artifact_id)
    split, rows, tokenized = split_rows(dataset, config.limit)
    staging = workspace.stage("eval", artifact_id)
    results, answers, harness, statistics = {}, {}, {}, {}
    follower = None
    for label, ref in (("tuned", tuned), ("baseline", baseline)):
        if ref is None:
            continue
        loaded = ref if isinstance(ref, LoadedModel) else load_for_inference(ref, workspace)
        follower = follower or start_following_load()
        if follower:
            follower.start(probe_seconds=0)  # loading set every thread again; the load since the last reading
        results[label], answers[label], statistics[label] = evaluate_model(loaded, rows, tokenized, config, follower)
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
    intervals, paired = uncertainty(statistics, results, len(rows), config)
    metrics = {"split": split, "examples": len(rows), "models": results, "intervals": intervals, "paired": paired,
               "bootstrap": {"resamples": config.bootstrap, "seed": config.seed, "confidence": stats.CONFIDENCE},
               "labels": model_labels(display_name(tuned.name, workspace),
                                      display_name(baseline, workspace)), "judge": judge_summary, "lm_eval": harness or None}
    write_json_atomic(staging.path / "metrics.json", metrics)
    write_atomic(staging.path / "report.md", report(tuned.name, baseline, dataset, metrics, notes, chart is not None))
    parents = [p for p in (tuned.artifact_id, dataset.id) if p]
    manifest = {"stage": "eval", "parents": parents, "model": tuned.name, "baseline": baseline,
                "dataset": dataset.id, "config": config_dict(config), "seed": config.seed, "metrics": metrics,
                "notes": notes, "judge": judge.describe() if judge else None,
                "thread_changes": follower.changes if follower else []}
    return Result(staging.finish(manifest), reused=False)


def preference_eval(tuned: LoadedModel, baseline: str | None, dataset, config: EvalConfig, workspace: Workspace,
                    artifact_id: str) -> Result:
    """Each model's ranking of the held-out pairs (eval/preference.py), with intervals and the paired test."""
    from privtune.eval import preference

    for split in ("test", "validation"):
        lines = (dataset.path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        if lines:
            break
    else:
        raise PrivtuneError(f"dataset {dataset.id} has no test or validation pairs", field="--data")
    pairs = [json.loads(line) for line in lines[: config.limit or len(lines)]]
    staging = workspace.stage("eval", artifact_id)
    values, per_pair = {}, {}
    for label, ref in (("tuned", tuned), ("baseline", baseline)):
        if ref is None:
            continue
        loaded = ref if isinstance(ref, LoadedModel) else load_for_inference(ref, workspace)
        values[label] = preference.evaluate_pairs(loaded, pairs, dataset.chat_template, config.batch_size)
        per_pair[label] = preference.pair_statistics(values[label])
    if "baseline" in values and (implicit := preference.implicit_reward(values["tuned"], values["baseline"])):
        per_pair["tuned"]["implicit_reward_accuracy"] = implicit
    metrics = {"split": split, "examples": len(pairs), "kind": "preference",
               **preference.summarize(per_pair, config.bootstrap, config.seed),
               "bootstrap": {"resamples": config.bootstrap, "seed": config.seed, "confidence": stats.CONFIDENCE},
               "labels": model_labels(display_name(tuned.name, workspace), display_name(baseline, workspace))}
    write_json_atomic(staging.path / "metrics.json", metrics)
    write_atomic(staging.path / "pairs.jsonl", "".join(json.dumps({"index": i, **{f"{label}_{k}": v[i] for label, kv
                                                                                in values.items() for k, v in kv.items()}})
                                                       + "\n" for i in range(len(pairs))))
    write_atomic(staging.path / "report.md", preference.report(tuned.name, baseline, dataset.id, metrics))
    manifest = {"stage": "eval", "parents": [p for p in (tuned.artifact_id, dataset.id) if p], "model": tuned.name,
                "baseline": baseline, "dataset": dataset.id, "config": config_dict(config), "seed": config.seed,
                "metrics": metrics, "notes": [], "judge": None, "thread_changes": []}
    return Result(staging.finish(manifest), reused=False)


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


def display_name(ref: str | None, workspace: Workspace) -> str | None:
    """A model's name for a column: an artifact's own name (an imported GGUF's file name) or its id,
    also when `ref` is the weights folder inside an artifact (a trained model's base); else the ref."""
    if not ref:
        return ref
    artifact = workspace.get("model", ref) if ARTIFACT_ID.fullmatch(ref) else None
    folder = Path(ref)
    if artifact is None and folder.is_dir() and (folder.parent / "manifest.json").is_file():
        try:
            artifact = Artifact.load(folder.parent)
        except PrivtuneError:
            artifact = None
    if artifact is None or not isinstance(artifact.manifest, dict):
        return ref
    return artifact.manifest.get("name") or artifact.id


def plot_comparison(results: dict, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m.name for m in answer_metrics().values()
               if m.plot and any(results[label].get(m.name) is not None for label in results)]
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
