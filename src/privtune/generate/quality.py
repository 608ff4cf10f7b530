"""`privtune filter`: a judge rates every example of a dataset 1-5; those under --min-score are dropped.

Lexical filters cannot see a wrong answer; self-instruct's own authors found 46% of a sample of their
generated data flawed. The judge (any OpenAI-compatible endpoint, behind the same privacy guard as
generate and eval) reads each example and rates it (request clear, input consistent, response correct
and complete) with one sentence of reasoning. Ratings are appended to `ratings.jsonl` as they come, so
an interrupted run, or one where requests failed, resumes on the same command and asks only for the
examples not yet rated. The filtered dataset keeps the parent's splits and tokens row for row; the
manifest holds the score distribution and the counts dropped and why, `dropped.jsonl` each dropped
example with its score and the judge's reason.
"""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

from pydantic import model_validator

from privtune.artifacts import Result, Workspace, stable_hash, write_atomic
from privtune.config import Config, ConfigValueError, config_dict
from privtune.contract import dataset_artifact
from privtune.data.dataset import SPLITS, drop_rows
from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError
from privtune.judging import RATING_PROMPT, ask, parse_score, wilson_interval
from privtune.ui import track

RATINGS = "ratings.jsonl"
DATASET_FILES = ("chat_template.jinja", *(f"{split}.jsonl" for split in SPLITS))


class FilterConfig(Config):
    min_score: int = 3
    """Keep examples the judge rates at least this (1-5)."""
    concurrency: int = 4
    """Ratings in flight at once (a batching server answers them together)."""
    seed: int = 42

    @model_validator(mode="after")
    def check(self):
        if not 1 <= self.min_score <= 5:
            raise ConfigValueError("min_score", f"must be 1-5, got {self.min_score}")
        if self.concurrency < 1:
            raise ConfigValueError("concurrency", f"must be at least 1, got {self.concurrency}")
        return self


def rating_prompt(example: dict) -> str:
    """The rating prompt for one conversation: every turn before the last answer is the request."""
    *asked, answer = example["messages"]
    request = asked[0]["content"] if len(asked) == 1 else "\n".join(f"{m['role']}: {m['content']}" for m in asked)
    return RATING_PROMPT.format(prompt=request, response=answer["content"])


def rate(endpoint: Endpoint, rows: list[tuple[str, int, dict]], ratings_path, config: FilterConfig) -> dict:
    """Rate the examples `ratings_path` has no rating for yet, appending each as it arrives; the earlier and
    new ratings by (split, row), and how many requests failed (those stay unrated, for a rerun)."""
    import openai

    done = {}
    if ratings_path.exists():
        for line in ratings_path.read_text(encoding="utf-8").splitlines():
            try:
                rating = json.loads(line)
            except ValueError:
                continue  # a line cut off by a kill: that example is rated again
            done[(rating["split"], rating["row"])] = rating
    todo = [(split, row, example) for split, row, example in rows if (split, row) not in done]
    failed, lock = [], threading.Lock()
    client = endpoint.client()

    def one(item, log):
        split, row, example = item
        try:
            reply = ask(client, endpoint, rating_prompt(example), config.seed)
        except openai.APIError as exc:
            with lock:
                failed.append(endpoint.redact(str(exc))[:200])
            return
        rating = {"split": split, "row": row, "score": parse_score(reply), "reason": reply.strip()[-500:]}
        with lock:
            log.write(json.dumps(rating, ensure_ascii=False) + "\n")
            log.flush()
            done[(split, row)] = rating

    try:
        with open(ratings_path, "a", encoding="utf-8") as log, ThreadPoolExecutor(config.concurrency) as pool:
            for _ in track(pool.map(lambda item: one(item, log), todo), "rating", total=len(todo)):
                pass
    finally:
        client.close()
    return {"ratings": done, "failed": failed}


def run(data: str, endpoint: Endpoint, config: FilterConfig, workspace: Workspace, force: bool = False) -> Result:
    """Rate, keep those at or above min_score, write the filtered dataset; an identical earlier run is reused."""
    endpoint.check()
    dataset = dataset_artifact(data, workspace)
    if dataset.examples != "sft":
        raise PrivtuneError(f"dataset {dataset.id} holds {dataset.examples} examples; filter rates sft examples",
                            field="--data")
    artifact_id = stable_hash({"stage": "filter", "data": dataset.id, "judge": endpoint.describe(),
                               "config": config_dict(config)})
    existing = None if force else workspace.get("dataset", artifact_id)
    if existing:
        return Result(existing, reused=True)
    staging = workspace.stage("dataset", artifact_id, fresh=force)
    rows = [(split, row, json.loads(line)) for split in SPLITS
            for row, line in enumerate((dataset.path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines())]
    rated = rate(endpoint, rows, staging.path / RATINGS, config)
    if rated["failed"]:
        raise PrivtuneError(f"{len(rated['failed'])} of {len(rows)} rating requests failed (first: "
                            f"{rated['failed'][0]})", field="--judge-url",
                            hint="run the same command again: only the examples not yet rated are sent")
    ratings = rated["ratings"]
    for name in DATASET_FILES:
        shutil.copy2(dataset.path / name, staging.path / name)
    shutil.copytree(dataset.path / "tokenized", staging.path / "tokenized", dirs_exist_ok=True)
    dropped, splits = [], {}
    for split in SPLITS:
        below = {row for s, row, _ in rows if s == split and not _kept(ratings[(s, row)], config)}
        drop_rows(staging.path, split, below)
        splits[split] = sum(1 for s, _, _ in rows if s == split) - len(below)
        dropped += [{**ratings[(s, row)], "example": example} for s, row, example in rows if s == split and row in below]
    write_atomic(staging.path / "dropped.jsonl", "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dropped))
    unscored = sum(rating["score"] is None for rating in ratings.values())
    if unscored > len(rows) / 2:
        raise PrivtuneError(f"the judge gave no score for {unscored} of {len(rows)} examples", field="--judge-model",
                            hint=f"its replies are in {staging.path / RATINGS}; use a judge that ends its reply with "
                                 "'Score: N' (small models often cannot: a 135M one never did)")
    if not splits["train"]:
        raise PrivtuneError(f"no train example is rated {config.min_score} or more", field="min_score",
                            hint=f"see {staging.path / RATINGS}; lower --min-score or check the judge")
    scores = [r["score"] for r in ratings.values()]
    distribution = {str(score): scores.count(score) for score in range(1, 6)}
    kept = sum(splits.values())
    low, high = wilson_interval(kept, len(rows))
    metrics = {"rated": len(rows), "score_distribution": {**distribution, "unparsed": scores.count(None)},
               "mean_score": round(sum(s for s in scores if s) / max(1, len(rows) - scores.count(None)), 3),
               "kept": kept, "kept_share": round(kept / len(rows), 4), "kept_share_interval": [low, high],
               "dropped": {"below_min_score": sum(1 for s in scores if s is not None and s < config.min_score),
                           "unparsed": scores.count(None)},
               "examples": kept, "splits": splits}
    manifest = {"stage": "filter", "examples": "sft", "parents": [dataset.id], "model": dataset.model,
                "tokenizer_fingerprint": dataset.tokenizer_fingerprint, "judge": endpoint.describe(),
                "config": {**config_dict(config), "template": dataset.template_name}, "seed": config.seed,
                "metrics": metrics}
    return Result(staging.finish(manifest), reused=False)


def _kept(rating: dict, config: FilterConfig) -> bool:
    return rating["score"] is not None and rating["score"] >= config.min_score


def summary_rows(artifact) -> list[tuple[str, str]]:
    m = artifact.manifest["metrics"]
    low, high = m["kept_share_interval"]
    return [("rated", str(m["rated"])),
            ("scores 1 / 2 / 3 / 4 / 5 (unparsed)", " / ".join(str(m["score_distribution"][str(s)]) for s in range(1, 6))
             + f" ({m['score_distribution']['unparsed']})"),
            ("mean score", str(m["mean_score"])),
            ("dropped: below min_score / unparsed", f"{m['dropped']['below_min_score']} / {m['dropped']['unparsed']}"),
            ("kept (share, 95% interval)", f"{m['kept']} ({m['kept_share']:.2f}, {low:.2f}-{high:.2f})"),
            ("train / validation / test", " / ".join(str(m["splits"][s]) for s in SPLITS))]
