"""`privtune generate`: seeds or documents -> a teacher writes instruction data -> a dataset artifact.

How the teacher is asked is a style (privtune/generate/styles/, `--set style=`): self_instruct as
Stanford Alpaca ran it (each request shows a few sampled seed tasks and a few already generated, and
asks for a numbered batch of new ones), or magpie (the teacher writes each instruction from its chat
template's pre-query text, then answers it). Every style's tasks are filtered the same way (length,
block-list, non-text, exact and ROUGE-L near duplicates). Accepted examples
are appended to a JSONL in the staging directory and flushed as they come, so a killed run resumes
on the same command and stops at exactly N. Each request to the teacher is written to an egress log
before it leaves (egress.py), so the manifest counts every request the teacher received, kills included.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from privtune.artifacts import Artifact, Result, Workspace, file_sha256, stable_hash, write_json_atomic
from pydantic import Field, model_validator

from privtune.config import CommaList, Config, ConfigValueError, config_dict
from privtune.data.dataset import DatasetSettings
from privtune.data.decontaminate import against_digest, decontamination_rows
from privtune.endpoint import Endpoint, is_private_host
from privtune.errors import PrivtuneError
from privtune.generate.egress import EGRESS_LOG, BudgetSpent, EgressLog, complete_lines
from privtune.generate.neardup import NearDuplicateIndex
from privtune.generate.parse import DEFAULT_BLOCKLIST, Task, rejection_reason
from privtune.generate.redact import redact
from privtune.generate.seeds import Seed, load_seeds
from privtune.generate.style import Plan, Reply, lookup, styles
from privtune.ui import console, progress_bar

ACCEPTED = "generated.jsonl"
PROGRESS = "progress.json"
LIMITS = ("max_requests", "max_idle_requests")
"""How long to keep asking, not what to make: left out of the dataset's identity, so a run one of them
stopped continues (same id, same kept examples) when it is raised."""


class GenerateConfig(Config):
    num: int = 100
    """Examples to keep."""
    style: str = "self_instruct"
    """How the teacher is asked (a module of privtune/generate/styles): self_instruct (a numbered batch of tasks
    from sampled seeds, Alpaca) or magpie (the teacher writes each instruction from its chat template's pre-query
    text, then answers it: what small local teachers do well)."""
    teacher_template: str = ""
    """magpie: where the teacher's chat template comes from: its model folder, GGUF file, model artifact id or hub
    id, a named template (chatml, alpaca) or a .jinja file; empty: the teacher's model name, if it is a model here."""
    system_prompt: str = ""
    """magpie: a system message that steers the teacher's instructions to a domain; sent with both requests."""
    query_max_tokens: int = 128
    """magpie: the longest instruction asked for; one cut off there is dropped."""
    answer_temperature: float = 0.0
    """magpie: sampling temperature of the answers (the instructions use `temperature`); 0 is greedy, as Magpie's."""
    seeds_per_prompt: int = 3
    generated_per_prompt: int = 2
    """Already-generated tasks mixed into each prompt, as self-instruct does."""
    tasks_per_request: int = 10
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 3072
    stop: CommaList = Field(default_factory=list)
    concurrency: int = 8
    """Requests in flight at once."""
    client: str = "lean"
    """lean: privtune's aiohttp client with the openai client's errors, retries and types at a sixth of its
    CPU a request (it matters at high concurrency); openai: the stock AsyncOpenAI client."""
    timeout: float = 120.0
    retries: int = 4
    """Retries per request with backoff (the openai client's) on 429, 5xx and timeouts."""
    max_failed_requests: int = 20
    """Stop (keeping what was accepted) after this many requests failed in a row."""
    max_idle_requests: int = 20
    """Stop (keeping what was accepted) after this many answered requests in a row added no example (every task
    rejected: a teacher repeating itself, filters nothing passes); at least 2 x concurrency, as answers come in bursts."""
    max_requests: int = 0
    """Stop (keeping what was accepted) once this many HTTP requests were sent, retries and resumed runs
    included; 0: no budget."""
    min_words: int = 3
    max_words: int = 150
    blocklist: CommaList = Field(default_factory=lambda: list(DEFAULT_BLOCKLIST))
    rouge_threshold: float = 0.7
    """Reject an instruction whose ROUGE-L F with any seed or kept one is above this."""
    prompt_template: str = ""
    """Path to a prompt file with {num_tasks} and {examples} ({chunk}, {source} in docs mode)."""
    chunk_chars: int = 2000
    """Docs mode: characters per chunk shown to the teacher."""
    seed: int = 42
    """Seeds sampling and, unless dataset.seed is set, the dataset's split."""
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    """How the kept examples become a dataset for the student: prep's keys, e.g. --set dataset.max_length=512,
    dataset.template=chatml, dataset.test_fraction=0.2."""

    def dataset_settings(self) -> DatasetSettings:
        """The dataset section, its split seeded by `seed` unless the section sets its own."""
        if "seed" in self.dataset.model_fields_set:
            return self.dataset
        return self.dataset.model_copy(update={"seed": self.seed})

    @model_validator(mode="after")
    def check(self):
        for name in ("num", "seeds_per_prompt", "tasks_per_request", "concurrency", "max_tokens", "chunk_chars",
                     "max_failed_requests", "max_idle_requests", "max_words", "query_max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigValueError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("generated_per_prompt", "retries", "max_requests", "min_words"):
            if getattr(self, name) < 0:
                raise ConfigValueError(name, f"must be 0 or more, got {getattr(self, name)}")
        if self.min_words > self.max_words:  # every instruction would be rejected, and requests sent forever
            raise ConfigValueError("min_words", f"min_words ({self.min_words}) is greater than max_words "
                                                f"({self.max_words}): no instruction can pass both")
        if not 0 < self.top_p <= 1:
            raise ConfigValueError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.timeout <= 0:
            raise ConfigValueError("timeout", f"must be more than 0 seconds, got {self.timeout}")
        if not 0 < self.rouge_threshold <= 1:
            raise ConfigValueError("rouge_threshold", "must be in (0, 1]")
        if self.temperature < 0:
            raise ConfigValueError("temperature", "must be >= 0")
        if self.answer_temperature < 0:
            raise ConfigValueError("answer_temperature", "must be >= 0")
        if self.style not in styles():
            raise ConfigValueError("style", f"unknown style '{self.style}': one of {', '.join(styles())}")
        if self.client not in ("lean", "openai"):
            raise ConfigValueError("client", f"must be lean or openai, got '{self.client}'")
        return self


@dataclass
class Source:
    """What the teacher is shown: seeds (self-instruct) or document chunks (docs)."""

    mode: Literal["self_instruct", "docs", "none"]
    seeds: list[Seed]
    chunks: list[tuple[str, str]]  # (source name, text)
    inputs: list[dict]


def load_source(seeds: Path | None, docs: Path | None, config: GenerateConfig) -> Source:
    if seeds and docs or not (seeds or docs or "none" in lookup(config.style).reads):
        raise PrivtuneError("pass exactly one of --seeds FILE or --docs DIR", field="--seeds")
    if not (seeds or docs):  # a seed-free style
        return Source("none", [], [], [])
    if seeds:
        if not Path(seeds).is_file():
            raise PrivtuneError("no such file", source=str(seeds), field="--seeds")
        loaded = load_seeds(Path(seeds))
        return Source("self_instruct", loaded, [], [{"path": str(seeds), "sha256": file_sha256(Path(seeds))}])
    from privtune.generate.documents import chunk_documents

    chunks, inputs = chunk_documents(Path(docs), config.chunk_chars)
    return Source("docs", [], chunks, inputs)


def template_text(config: GenerateConfig, mode: str) -> str:
    if config.prompt_template:
        path = Path(config.prompt_template)
        if not path.is_file():
            raise PrivtuneError("no such prompt template", source=str(path), field="prompt_template")
        return path.read_text(encoding="utf-8")
    name = "self_instruct.txt" if mode == "self_instruct" else "docs_qa.txt"
    return resources.files("privtune").joinpath(f"templates/{name}").read_text(encoding="utf-8")


def format_task(number: int, instruction: str, extra: str, output: str) -> str:
    return (f"###\n{number}. Instruction: {instruction}\n{number}. Input:\n{extra or '<noinput>'}\n"
            f"{number}. Output:\n{output}")


@dataclass
class Prompt:
    text: str
    shown: list[str]  # ids of the seeds or chunk shown
    next_number: int = 1  # the task number the prompt leaves open


@dataclass
class StyleContext:
    """What a style's `prepare` may use: the run's settings, the student's tokenizer and where models are."""

    config: GenerateConfig
    source: Source
    endpoint: Endpoint
    workspace: Workspace
    tokenizer: object
    redact_text: bool = False
    screen: object = lambda instruction: None
    """(instruction) -> why the filters would drop it, or None: lets a style skip asking for its answer."""


class PromptBuilder:
    """Samples what each request shows; redacts it when asked."""

    def __init__(self, source: Source, config: GenerateConfig, template: str, redact_text: bool):
        self.source, self.config, self.template, self.redact_text = source, config, template, redact_text
        self.rng = random.Random(config.seed)
        self.redactions = 0
        self.next_chunk = 0

    def _clean(self, text: str) -> str:
        if not self.redact_text:
            return text
        text, count = redact(text)
        self.redactions += count
        return text

    def build(self, generated: list[dict]) -> Prompt:
        if self.source.mode == "docs":
            name, chunk = self.source.chunks[self.next_chunk % len(self.source.chunks)]
            self.next_chunk += 1
            text = self.template.format(num_tasks=self.config.tasks_per_request, chunk=self._clean(chunk),
                                        source=name)
            return Prompt(text, [f"{name}#{(self.next_chunk - 1) % len(self.source.chunks)}"])
        seeds = self.rng.sample(self.source.seeds, min(self.config.seeds_per_prompt, len(self.source.seeds)))
        mixed = self.rng.sample(generated, min(self.config.generated_per_prompt, len(generated)))
        shown = [(s.instruction, s.input, s.output) for s in seeds]
        shown += [(g["instruction"], g["input"], g["output"]) for g in mixed]
        examples = "\n".join(format_task(i + 1, *(self._clean(x) for x in item)) for i, item in enumerate(shown))
        examples += f"\n###\n{len(shown) + 1}. Instruction:"
        text = self.template.format(num_tasks=self.config.tasks_per_request, examples=examples)
        return Prompt(text, [s.id for s in seeds], len(shown) + 1)


class Collector:
    """Filters tasks and appends the kept ones to the JSONL, flushed line by line."""

    def __init__(self, path: Path, config: GenerateConfig, seeds: list[Seed]):
        self.path, self.config = path, config
        self.index = NearDuplicateIndex(config.rouge_threshold, order_hint=[s.instruction for s in seeds])
        for seed in seeds:
            self.index.add(seed.instruction)
        self.exact: set[str] = {s.instruction.strip().lower() for s in seeds}
        self.kept: list[dict] = []
        self.drops: Counter = Counter()
        self._resume()
        self.handle = open(path, "a", encoding="utf-8")

    def _resume(self) -> None:
        """Reload what an interrupted run kept; a torn last line (killed mid-write) is cut off."""
        for line in complete_lines(self.path).decode("utf-8").splitlines():
            record = json.loads(line)
            self.kept.append(record)
            self.index.add(record["instruction"])
            self.exact.add(record["instruction"].strip().lower())

    def screen(self, task: Task) -> str | None:
        """Why the filters drop this task, or None."""
        reason = rejection_reason(task, self.config.min_words, self.config.max_words, self.config.blocklist)
        if reason is None and task.instruction.strip().lower() in self.exact:
            reason = "duplicate"
        if reason is None and self.index.is_near_duplicate(task.instruction):
            reason = "near_duplicate"
        return reason

    def offer(self, task: Task, provenance: dict) -> bool:
        reason = self.screen(task)
        key = task.instruction.strip().lower()
        if reason:
            self.drops[reason] += 1
            return False
        record = {"instruction": task.instruction, "input": task.input, "output": task.output, **provenance}
        self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.kept.append(record)
        self.index.add(task.instruction)
        self.exact.add(key)
        return True

    def close(self) -> None:
        self.handle.close()


@dataclass
class Stats:
    requests: int = 0
    failed_requests: int = 0
    malformed_responses: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    parsed: int = 0
    unparsed_blocks: int = 0
    truncated_responses: int = 0


async def _fatal(exc: Exception, endpoint: Endpoint, client) -> PrivtuneError | None:
    """Errors that retrying cannot fix: stop at once with what to change."""
    import openai

    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return PrivtuneError(f"the teacher at {endpoint.host} refused the request ({exc.status_code}): check the API key",
                             field="--api-key-env", hint="the key is read from the environment variable named there")
    if isinstance(exc, openai.NotFoundError):
        return _not_found(exc, endpoint, await _listed_models(client))
    if isinstance(exc, openai.BadRequestError):
        return PrivtuneError(f"the teacher rejected the request (400): {endpoint.redact(str(exc))[:300]}",
                             field="--teacher-model")
    return None


async def _listed_models(client) -> list[str] | None:
    """The model ids the teacher lists at <url>/models (one more request, logged as egress), or None if it
    lists none there: then the URL's path is likely wrong."""
    from privtune.lean_client import LeanChatClient

    try:
        if isinstance(client, LeanChatClient):
            return await client.models()
        return [model.id for model in (await client.models.list()).data]
    except Exception:  # a 404, or not an OpenAI-style list: reported as "no list" either way
        return None


def _not_found(exc: Exception, endpoint: Endpoint, listed: list[str] | None) -> PrivtuneError:
    """A 404 means a missing model or a wrong path (no /v1; the full .../chat/completions); the server's own
    model list tells which, and the message names what it lists (privtune serve names its model by artifact id)."""
    parts = urlsplit(endpoint.public_url)
    url, path = endpoint.public_url.rstrip("/"), parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        path_hint = f"pass the base URL, without /chat/completions: {urlunsplit(parts._replace(path=path[:-17]))}"
    elif not path.endswith("/v1"):
        path_hint = ("OpenAI-compatible servers (vLLM, Ollama, llama.cpp, privtune serve) answer under /v1: try "
                     f"--teacher-url {urlunsplit(parts._replace(path=path + '/v1'))}")
    else:
        path_hint = None
    if listed is None:
        return PrivtuneError(f"the teacher at {endpoint.host} answered 404 to {url}/chat/completions and lists no "
                             f"models at {url}/models: the URL's path looks wrong", field="--teacher-url",
                             hint=path_hint or "check the server's documentation for its OpenAI-compatible base URL")
    if endpoint.model not in listed:
        names = ", ".join(f"'{name}'" for name in listed[:10]) + (" ..." if len(listed) > 10 else "")
        return PrivtuneError(f"the teacher at {endpoint.host} has no model '{endpoint.model}' (404); it lists "
                             f"{names or 'no models'}", field="--teacher-model",
                             hint="pass one of those as --teacher-model" if listed else path_hint)
    return PrivtuneError(f"the teacher at {endpoint.host} lists model '{endpoint.model}' but answered 404 for it: "
                         f"{endpoint.redact(str(exc))[:200]}", field="--teacher-url",
                         hint=path_hint or "the server may route chat completions elsewhere; check its base URL")


async def _produce(endpoint: Endpoint, config: GenerateConfig, plan: Plan, collector: Collector,
                   stats: Stats, egress: EgressLog, mode: str) -> str | None:
    """Ask until `num` examples are kept; returns why it stopped short of that, or None.

    It stops short when the request budget is spent or when `idle_limit` answers in a row added nothing:
    without that a teacher repeating itself, or filters nothing passes, are asked forever. Requests
    already sent are answered and used first."""
    from privtune.generate.clients import Clients

    clients = Clients(endpoint, config.concurrency, lean=config.client == "lean", on_send=egress.record)
    pending: dict[asyncio.Task, Prompt] = {}
    failures_in_a_row = idle = 0
    stopped = None
    spent = f"the request budget (--max-requests {config.max_requests}) is spent"
    with progress_bar() as bar:
        task_id = bar.add_task("generating", total=config.num, completed=len(collector.kept))
        try:
            while len(collector.kept) < config.num:
                while not stopped and len(pending) < config.concurrency:
                    if egress.spent():
                        stopped = spent
                        break
                    prompt = plan.build(collector.kept)
                    pending[asyncio.ensure_future(plan.ask(clients, prompt))] = prompt
                if not pending:
                    break
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    prompt = pending.pop(future)
                    try:
                        reply = future.result()
                    except BudgetSpent:  # refused before anything was sent
                        stopped = stopped or spent
                        continue
                    except Exception as exc:  # the client already retried what is retryable
                        fatal = await _fatal(exc, endpoint, clients.client)
                        if fatal:
                            raise fatal from None
                        stats.requests += 1
                        failures_in_a_row += 1
                        idle += 1
                        _count_failure(exc, endpoint, config, stats, failures_in_a_row)
                    else:
                        stats.requests += reply.calls
                        failures_in_a_row = 0
                        kept_before = len(collector.kept)
                        _take(reply, prompt, endpoint, collector, stats, config, mode)
                        idle = 0 if len(collector.kept) > kept_before else idle + 1
                        bar.update(task_id, completed=min(len(collector.kept), config.num))
                    if idle >= idle_limit(config) and not stopped:
                        drops = ", ".join(f"{r} {n}" for r, n in collector.drops.most_common(3)) or "none"
                        stopped = f"{idle} requests in a row added no example (rejected so far: {drops})"
        finally:
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await clients.close()
    return stopped


def idle_limit(config: GenerateConfig) -> int:
    return max(config.max_idle_requests, 2 * config.concurrency)


def _count_failure(exc: Exception, endpoint: Endpoint, config: GenerateConfig, stats: Stats, in_a_row: int) -> None:
    """A request that failed after the client's retries: stop after `max_failed_requests` in a row."""
    stats.failed_requests += 1
    if in_a_row >= config.max_failed_requests:
        raise PrivtuneError(f"{in_a_row} requests to {endpoint.host} failed in a row "
                            f"(last: {type(exc).__name__}: {endpoint.redact(str(exc))[:200]})",
                            field="--teacher-url", hint="what was accepted is kept; re-run the same command to resume")


def _take(reply: Reply, prompt: Prompt, endpoint: Endpoint, collector: Collector, stats: Stats,
          config: GenerateConfig, mode: str) -> None:
    stats.prompt_tokens += reply.prompt_tokens
    stats.completion_tokens += reply.completion_tokens
    stats.malformed_responses += int(reply.malformed)
    stats.truncated_responses += int(reply.truncated)
    stats.parsed += len(reply.tasks)
    stats.unparsed_blocks += reply.unparsed
    collector.drops.update(reply.rejected)
    for task in reply.tasks:
        if len(collector.kept) >= config.num:
            return
        collector.offer(task, {"meta": {"source": "generate", "mode": mode, "style": config.style,
                                        "shown": prompt.shown, "teacher_model": endpoint.model,
                                        "request_id": reply.request_id, "time": time.time()}})


def to_example(record: dict) -> dict:
    user = record["instruction"] + (f"\n\n{record['input']}" if record["input"].strip() else "")
    return {"messages": [{"role": "user", "content": user, "train": False},
                         {"role": "assistant", "content": record["output"], "train": True}],
            "meta": record.get("meta", {})}


def dry_run(endpoint: Endpoint, source: Source, config: GenerateConfig, template: str, redact_text: bool, *,
            model: str | None = None, workspace: Workspace | None = None) -> str:
    """One rendered prompt and where it would go; sends nothing. Styles other than self_instruct are prepared
    as a run prepares them (`model` and `workspace` find the tokenizers they render with)."""
    route = "chat/completions"
    if config.style == "self_instruct":
        text = PromptBuilder(source, config, template, redact_text).build([]).text
    else:
        from privtune.models.loading import load_tokenizer, resolve_model

        workspace = workspace or Workspace(None)
        tokenizer = load_tokenizer(resolve_model(model, workspace)) if model else None
        plan = lookup(config.style).prepare(StyleContext(config, source, endpoint, workspace, tokenizer, redact_text))
        text, route = plan.dry_prompt(), plan.route
    try:
        endpoint.check()
        verdict = "allowed"
    except PrivtuneError as exc:
        verdict = f"REFUSED: {exc.message}"
    return (f"{text}\n---\nwould send: POST {endpoint.public_url.rstrip('/')}/{route} "
            f"model={endpoint.model} concurrency={config.concurrency}\nhost {endpoint.host}: {verdict}\n"
            f"redaction: {'on' if redact_text else 'off'}; nothing was sent (--dry-run)")


def run(endpoint: Endpoint, model: str, config: GenerateConfig, workspace: Workspace, *,
        seeds: Path | None = None, docs: Path | None = None, redact_text: bool = False,
        force: bool = False) -> Result:
    """Generate `config.num` examples with the teacher, then write a dataset artifact for `model`."""
    from privtune.data import dataset
    from privtune.data.render import choose_template, tokenizer_fingerprint
    from privtune.models.loading import load_tokenizer, resolve_model

    endpoint.check()  # before anything else: a refused host costs nothing
    source = load_source(seeds, docs, config)
    model_ref = resolve_model(model, workspace)
    tokenizer = load_tokenizer(model_ref)
    context = StyleContext(config, source, endpoint, workspace, tokenizer, redact_text)
    plan = lookup(config.style).prepare(context)
    chat_template = choose_template(tokenizer, config.dataset.template)
    fingerprint = tokenizer_fingerprint(tokenizer, chat_template)
    what = {k: v for k, v in config_dict(config).items() if k not in LIMITS}
    identity = {"stage": "generate", "inputs": [i["sha256"] for i in source.inputs], "config": what,
                "teacher": {"url": endpoint.base_url, "model": endpoint.model}, "redact": redact_text,
                "template": stable_hash(plan.template), "tokenizer": fingerprint,
                "decontaminate_against": against_digest(config.dataset)}
    artifact_id = stable_hash(identity)
    existing = None if force else workspace.get("dataset", artifact_id)
    if existing and not force and not existing.manifest.get("stopped"):
        return Result(existing, reused=True)
    remote = not is_private_host(endpoint.host)
    if remote:
        console.print(f"[yellow]data leaves this machine[/]: prompts go to {endpoint.host} (--allow-remote); "
                      f"{plan.describe()}; redaction {'on' if redact_text else 'off'}")
    staging = workspace.stage("dataset", artifact_id, fresh=force)
    if existing and not force and not (staging.path / ACCEPTED).exists():  # it stopped short: go on from there
        for name in (ACCEPTED, EGRESS_LOG, PROGRESS):
            if (existing.path / name).exists():
                shutil.copy2(existing.path / name, staging.path / name)
    stats = Stats(**_load_progress(staging.path))
    collector = Collector(staging.path / ACCEPTED, config, source.seeds)
    context.screen = lambda instruction: collector.screen(Task(instruction, "", "-"))
    egress = EgressLog(staging.path / EGRESS_LOG, config.max_requests)
    if collector.kept or egress.sent:
        console.print(f"resuming: {len(collector.kept)} of {config.num} examples already accepted "
                      f"({egress.sent} requests sent so far)")
    try:
        stopped = asyncio.run(_produce(endpoint, config, plan, collector, stats, egress, source.mode))
    finally:
        collector.close()
        egress.close()
        write_json_atomic(staging.path / PROGRESS, {**stats.__dict__, "drops": dict(collector.drops)})
    kept = collector.kept[: config.num]
    if stopped:
        _report_stop(stopped, len(kept), config, egress.sent, staging.path)
    dataset_stats = dataset.write_dataset(staging.path, [to_example(r) for r in kept], tokenizer, chat_template,
                                          config.dataset_settings(), source=str(staging.path / ACCEPTED))
    blocks = stats.parsed + stats.unparsed_blocks
    metrics = {**dataset_stats, "generated": len(kept),
               "generation": {**stats.__dict__, "style": config.style, "dropped": dict(collector.drops),
                              "parsed_share": round(stats.parsed / blocks, 4) if blocks else None}}
    manifest = {
        "stage": "generate", "mode": source.mode, "style": config.style, "parents": [], "inputs": source.inputs,
        "config": config_dict(config), "teacher": endpoint.describe(), "seed": config.seed, "metrics": metrics,
        "model": model_ref.location, "tokenizer_fingerprint": fingerprint, "stopped": stopped,
        "egress": {"host": endpoint.host, "remote": remote, "requests": egress.sent, "bytes": egress.bytes,
                   "log": EGRESS_LOG, "prompt_tokens": stats.prompt_tokens, "redacted": redact_text,
                   "redactions": plan.redactions(), "items_shown": plan.items_shown},
    }
    return Result(staging.finish(manifest), reused=False)


def _report_stop(why: str, kept: int, config: GenerateConfig, sent: int, staging: Path) -> None:
    """A run that stopped short of `num`: an error if nothing was kept (the staging directory stays, so the
    same command resumes), else a warning; the dataset of what was kept is written, and a re-run continues it."""
    hint = ("re-run the same command to continue (a larger --max-requests, --set max_idle_requests=N are the "
            "same run); if the teacher repeats itself raise its temperature, if the filters reject everything "
            "check --set min_words/max_words/blocklist")
    if not kept:
        raise PrivtuneError(f"stopped after {sent} requests: {why}; no example was accepted", source=str(staging),
                            hint=hint)
    console.print(f"[yellow]stopped short[/] after {sent} requests: {why}; writing the {kept} of {config.num} "
                  f"examples accepted.\n  hint: {hint}")


def _load_progress(folder: Path) -> dict:
    path = folder / PROGRESS
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k in Stats.__dataclass_fields__}


def summary_rows(artifact: Artifact) -> list[tuple[str, str]]:
    g = artifact.manifest["metrics"]["generation"]
    rows = [("style", artifact.manifest.get("style", "self_instruct")),
            ("sent to the teacher (retries included)", str(artifact.manifest["egress"]["requests"])),
            ("requests after retries (failed)", f"{g['requests']} ({g['failed_requests']})"),
            ("tokens in / out", f"{g['prompt_tokens']} / {g['completion_tokens']}"),
            ("malformed responses", str(g["malformed_responses"])),
            ("truncated responses", str(g["truncated_responses"])),
            ("tasks parsed (unparsed blocks)", f"{g['parsed']} ({g['unparsed_blocks']})"),
            ("kept", str(artifact.manifest["metrics"]["generated"]))]
    if artifact.manifest.get("stopped"):
        rows.append(("stopped short", artifact.manifest["stopped"]))
    rows += [(f"dropped: {reason}", str(count)) for reason, count in sorted(g["dropped"].items())]
    return rows + decontamination_rows(artifact.manifest["metrics"])
