"""`privtune generate --preferences`: on-policy preference pairs, judged locally, as a preference dataset.

The model being tuned (typically an SFT artifact) answers each prompt of a dataset `samples` times,
sampled; a judge (any OpenAI-compatible endpoint, behind the same privacy guard as generate and eval)
compares two different answers twice, once in each order. A pair is kept only when both orders name the
same winner, so the judge's position bias cannot make a preference; ties, disagreements, unparsed and
failed verdicts are counted in the manifest, not used. Each kept pair carries the judge's two reasons.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import model_validator

from privtune.artifacts import Result, Workspace, stable_hash
from privtune.config import ConfigValueError, config_dict
from privtune.contract import dataset_artifact
from privtune.data.dataset import DatasetSettings
from privtune.data.decontaminate import against_digest
from privtune.data.preference import write_preference_dataset
from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError
from privtune.judging import PROMPT, ask_judge, wilson_interval
from privtune.ui import track


class PreferenceConfig(DatasetSettings):
    """How the answers are sampled and judged; the dataset settings shape the preference dataset written."""

    samples: int = 2
    """Answers sampled per prompt; they are judged in pairs (1st vs 2nd, 3rd vs 4th, ...)."""
    num: int = 0
    """Prompts to use from the dataset's split (0: all)."""
    split: Literal["train", "validation", "test"] = "train"
    """The split whose prompts are answered. Pairs from test prompts would leak into a later eval."""
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0
    """0: no top-k cut."""
    max_new_tokens: int = 128
    batch_size: int = 8
    min_margin: float = 0.0
    """With a reward model as the scorer: keep a prompt's best and worst answers as a pair only when their scores
    differ by more than this."""

    @model_validator(mode="after")
    def check_sampling(self):
        if self.samples < 2 or self.num < 0 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigValueError("samples", "samples >= 2, num >= 0, max_new_tokens and batch_size >= 1")
        if self.temperature <= 0:
            raise ConfigValueError("temperature", "must be > 0: greedy answers to one prompt are all the same")
        return self


def sample_answers(loaded, prompts: list[list[dict]], config: PreferenceConfig) -> list[list[str]]:
    """`samples` answers to each prompt, each round with its own seed (reproducible from config.seed)."""
    from privtune.models.generation import generate_answers

    rounds = []
    for round_index in range(config.samples):
        settings = config.model_copy(update={"seed": config.seed + round_index})
        rounds.append([answer for answer, _ in generate_answers(loaded, prompts, settings)])
    return [list(answers) for answers in zip(*rounds)]


def judge_pairs(endpoint: Endpoint, rows: list[dict], answers: list[list[str]], log_path,
                seed: int) -> tuple[list, dict]:
    """Preference examples from each prompt's answers, judged in both orders, and the counts."""
    import openai

    client = endpoint.client()
    counts = dict.fromkeys(("compared", "kept", "identical", "ties", "disagreed", "unparsed", "failed"), 0)
    examples = []
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            for index, (row, candidates) in enumerate(track(list(zip(rows, answers)), "judging pairs")):
                prompt = row["messages"][:-1]
                asked = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
                for first, second in zip(candidates[0::2], candidates[1::2]):
                    if first.strip() == second.strip():
                        counts["identical"] += 1
                        continue
                    counts["compared"] += 1
                    verdicts, reasons = [], []
                    try:
                        for a, b in ((first, second), (second, first)):
                            text = PROMPT.format(prompt=asked, reference=row["messages"][-1]["content"], a=a, b=b)
                            verdict, reason = ask_judge(client, endpoint, text, seed)
                            verdicts.append(verdict)
                            reasons.append(reason)
                    except openai.APIError as exc:
                        counts["failed"] += 1
                        log.write(json.dumps({"prompt": index, "error": endpoint.redact(str(exc))[:300]}) + "\n")
                        continue
                    winners = [None if v is None else v if v == "tie" else (v == "A") == (order == 0)
                               for order, v in enumerate(verdicts)]  # True: `first` won in that order
                    outcome = ("unparsed" if None in winners else "ties" if "tie" in winners
                               else "disagreed" if winners[0] != winners[1] else "kept")
                    counts[outcome] += 1
                    log.write(json.dumps({"prompt": index, "verdicts": verdicts, "outcome": outcome,
                                          "reasons": reasons}, ensure_ascii=False) + "\n")
                    if outcome == "kept":
                        chosen, rejected = (first, second) if winners[0] else (second, first)
                        turn = lambda text: [{"role": "assistant", "content": text, "train": True}]
                        examples.append({"prompt": [{**m, "train": False} for m in prompt], "chosen": turn(chosen),
                                         "rejected": turn(rejected), "judge": {"reasons": reasons},
                                         "meta": {**row.get("meta", {}), "format": "judged"}})
    finally:
        client.close()
    decided = counts["kept"] + counts["disagreed"]
    low, high = wilson_interval(counts["kept"], decided)
    counts["agreement"] = counts["kept"] / decided if decided else None
    counts["agreement_interval"] = [low, high] if decided else None
    return examples, counts


def score_pairs(reward, rows: list[dict], answers: list[list[str]], template: str, log_path,
                min_margin: float) -> tuple[list, dict]:
    """Preference examples from a reward model's scores: each prompt's best-scored answer chosen, its
    worst rejected, when they differ by more than `min_margin`; and the counts."""
    from privtune.models.scoring import answer_row, reward_scores

    distinct = [list(dict.fromkeys(answer.strip() for answer in candidates)) for candidates in answers]
    turn = lambda text: [{"role": "assistant", "content": text, "train": True}]
    flat = [(index, answer) for index, options in enumerate(distinct) if len(options) > 1 for answer in options]
    scores = reward_scores(reward, [answer_row(reward, template, rows[index]["messages"][:-1], turn(answer))
                                    for index, answer in flat])
    by_prompt: dict[int, list[tuple[float, str]]] = {}
    for (index, answer), score in zip(flat, scores):
        by_prompt.setdefault(index, []).append((score, answer))
    counts = {"scorer": "reward model", "compared": len(by_prompt), "kept": 0, "ties": 0,
              "identical": sum(len(options) < 2 for options in distinct)}
    examples = []
    with open(log_path, "w", encoding="utf-8") as log:
        for index, scored in by_prompt.items():
            (best, chosen), (worst, rejected) = max(scored), min(scored)
            outcome = "kept" if best - worst > min_margin else "ties"
            counts[outcome] += 1
            log.write(json.dumps({"prompt": index, "scores": [score for score, _ in scored], "outcome": outcome}) + "\n")
            if outcome == "kept":
                prompt = rows[index]["messages"][:-1]
                examples.append({"prompt": [{**m, "train": False} for m in prompt], "chosen": turn(chosen),
                                 "rejected": turn(rejected), "judge": {"scores": [best, worst]},
                                 "meta": {**rows[index].get("meta", {}), "format": "scored"}})
    return examples, counts


def run(model: str, data: str, endpoint: Endpoint | None, config: PreferenceConfig, workspace: Workspace,
        force: bool = False, reward_model: str | None = None) -> Result:
    """Sample, judge (or score with a reward model) and write; an identical earlier run (same model, data,
    judge, settings) is reused."""
    from privtune.data.render import tokenizer_fingerprint
    from privtune.models.inference import load_for_inference
    from privtune.models.loading import resolve_model

    if endpoint is not None:
        endpoint.check()
    dataset = dataset_artifact(data, workspace)
    if dataset.examples != "sft":
        raise PrivtuneError(f"dataset {dataset.id} holds {dataset.examples} examples; --preferences answers the "
                            "prompts of an sft dataset", field="--data")
    text = (dataset.path / f"{config.split}.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    rows = rows[: config.num or len(rows)]
    if not rows:
        raise PrivtuneError(f"dataset {dataset.id} has no {config.split} examples", field="split")
    policy, scorer = resolve_model(model, workspace), resolve_model(reward_model, workspace) if reward_model else None
    if scorer is not None and (scorer.artifact is None or scorer.artifact.head != "score"):
        raise PrivtuneError(f"'{reward_model}' is not a reward model (train one with --recipe reward)",
                            field="--reward-model")
    name = lambda ref, found: found.artifact.id if found.artifact else ref  # as load_for_inference names it
    judge = endpoint.describe() if endpoint is not None else {"reward_model": name(reward_model, scorer)}
    artifact_id = stable_hash({"stage": "preferences", "model": name(model, policy), "data": dataset.id,
                               "judge": judge, "config": config_dict(config),
                               "decontaminate_against": against_digest(config)})
    existing = None if force else workspace.get("dataset", artifact_id)
    if existing:
        return Result(existing, reused=True)  # before minutes of loading
    loaded = load_for_inference(model, workspace)
    reward = load_for_inference(reward_model, workspace) if reward_model else None
    staging = workspace.stage("dataset", artifact_id)
    answers = sample_answers(loaded, [row["messages"][:-1] for row in rows], config)
    if reward is not None:
        examples, judged = score_pairs(reward, rows, answers, dataset.chat_template, staging.path / "judge.jsonl",
                                       config.min_margin)
    else:
        examples, judged = judge_pairs(endpoint, rows, answers, staging.path / "judge.jsonl", config.seed)
    if not examples:
        if reward is not None:
            raise PrivtuneError(f"the reward model kept no pair of {judged['compared']} compared "
                                f"({json.dumps(judged)})", field="--reward-model", hint="sample more prompts or "
                                "answers (--set samples=), or lower --set min_margin")
        raise PrivtuneError(f"the judge kept no pair of {judged['compared']} compared ({json.dumps(judged)})",
                            field="--judge-model", hint="see judge.jsonl in the staging folder; sample more "
                            "prompts, or use a judge that answers 'Winner: A' or 'Winner: B' on its last line")
    template = dataset.chat_template
    stats = write_preference_dataset(staging.path, examples, "preference", loaded.tokenizer, template, config,
                                     source=f"judged answers of {loaded.name}")
    manifest = {"stage": "generate", "mode": "preferences", "examples": "preference",
                "parents": [p for p in (loaded.artifact_id, dataset.id, reward and reward.artifact_id) if p],
                "model": loaded.name, "tokenizer_fingerprint": tokenizer_fingerprint(loaded.tokenizer, template),
                "judge": judge,
                "config": config_dict(config), "seed": config.seed, "metrics": {**stats, "judge": judged}}
    return Result(staging.finish(manifest), reused=False)
