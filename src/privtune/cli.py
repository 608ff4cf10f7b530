"""The `privtune` command: parse arguments, call a stage's plain function, print the result.

No logic lives here, and nothing heavy is imported at module level: `privtune --help` must be
instant, so torch/transformers/datasets are imported inside the stages that need them.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from privtune.data.formats import format_names
from privtune.errors import PrivtuneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune a model you own on data that never leaves your machines.")

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Artifact directory [default: $PRIVTUNE_HOME or ./privtune-runs]")
SetOpt = typer.Option([], "--set", help="Override a config key: --set key=value (repeatable; `privtune validate --keys` lists the recipe keys)")
ForceOpt = typer.Option(False, "--force", help="Recompute even if an identical artifact exists")


def _private_defaults(command: str | None = None) -> None:
    """No telemetry, no hub pushes: set before any Hugging Face library is imported. Also idle OpenMP
    threads sleep rather than spin (privtune.runtime.openmp_defaults), before torch is imported; except
    in `serve`, a long-lived process that owns its cores, whose batched decode of small ops needs
    libgomp's spinning (SmolLM2-135M, 8 requests: 77 tok/s spinning, 60 sleeping; benchmarks/bench_serve_real.py),
    and in `train` and `eval` where it can watch the machine's load and drop threads when others need the
    cores (runtime.ThreadsFollower)."""
    from privtune.runtime import OtherLoad, openmp_defaults

    if command != "serve" and not (command in ("train", "eval") and OtherLoad.visible()):
        openmp_defaults()
    for key, value in {"HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "WANDB_MODE": "offline",
                       "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}.items():
        os.environ.setdefault(key, value)


@app.callback()
def _every_command(ctx: typer.Context) -> None:
    """Runs before any command: privacy defaults first, whatever the command imports later."""
    _private_defaults(ctx.invoked_subcommand)


DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def handles_errors(command: Callable) -> Callable:
    """Show PrivtuneError as one clear message and exit 2; never a traceback for bad input."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from privtune.ui import console

        try:
            return command(*args, **kwargs)
        except PrivtuneError as exc:
            from rich.markup import escape

            # escaped: a hint like `pip install 'privtune[export]'` is text, not rich markup
            console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                raise
            where = f" {exc.filename}" if exc.filename else ""
            console.print(f"[bold red]error:[/] cannot write{where}: {exc.strerror}. Finished artifacts are untouched; "
                          "free space or make the workspace writable, then re-run the same command to resume",
                          markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: nothing finished was overwritten; re-run to resume")
            raise typer.Exit(130) from None

    return wrapper


def _workspace(path: Optional[Path]):
    from privtune.artifacts import Workspace

    return Workspace(path)


def _parse_map(text: str) -> dict[str, str]:
    mapping = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        target, sep, column = pair.partition("=")
        if not sep or not target or not column:
            raise PrivtuneError(f"expected schema_field=column, got '{pair}'", field="--map")
        mapping[target.strip()] = column.strip()
    return mapping


@app.command()
@handles_errors
def prep(
    data: List[Path] = typer.Option(..., "--data", "-d", help="Records file (JSONL, JSON, CSV, Parquet); repeatable"),
    model: str = typer.Option(..., "--model", "-m", help="Model whose tokenizer and chat template to use"),
    format: str = typer.Option("auto", "--format", help="auto (from the first record's fields) or one of: "
                               + ", ".join(format_names())),
    map: str = typer.Option("", "--map", help="Field mapping, e.g. instruction=question,output=answer"),
    template: str = typer.Option("model", "--template", help="model, chatml, alpaca, or a .jinja file"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad records; keep them in rejected.jsonl"),
    overrides: List[str] = SetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    force: bool = ForceOpt,
):
    """Turn your own records into a training-ready dataset artifact."""
    from privtune.config import build_config, apply_overrides
    from privtune.data import prep as stage
    from privtune.ui import console

    settings = {"format": format, "map": _parse_map(map), "template": template, "skip_bad": skip_bad}
    config = build_config(stage.PrepConfig, apply_overrides(settings, overrides, {}), source="command line")
    artifact, found = stage.run(data, model, config, _workspace(workspace), force=force)
    if found:
        console.print(f"found an identical dataset, not recomputed (--force to redo): {artifact.path}")
    else:
        _print_table("prep", stage.summary_rows(artifact))
        from privtune.contract import DatasetArtifact

        formats = ", ".join(f"{Path(k).name}: {v}" for k, v in DatasetArtifact.of(artifact).formats.items())
        console.print(f"format: {formats}")
    typer.echo(f"dataset {artifact.id} -> {artifact.path}")


@app.command()
@handles_errors
def generate(
    model: str = typer.Option(..., "--model", "-m", help="Student model whose tokenizer the dataset is made for"),
    seeds: Optional[Path] = typer.Option(None, "--seeds", help="Seed tasks (Alpaca seed_tasks.jsonl or any prep format)"),
    docs: Optional[Path] = typer.Option(None, "--docs", help="Folder of your documents (txt, md): Q&A mode"),
    num: Optional[int] = typer.Option(None, "--num", "-n", help="Examples to keep [default: 100]"),
    teacher_url: Optional[str] = typer.Option(None, "--teacher-url", envvar="PRIVTUNE_TEACHER_URL",
                                              help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"),
    teacher_model: Optional[str] = typer.Option(None, "--teacher-model", envvar="PRIVTUNE_TEACHER_MODEL"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Variable holding the API key [default: PRIVTUNE_API_KEY, OPENAI_API_KEY]"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a teacher off this machine and private network"),
    redact_text: bool = typer.Option(False, "--redact", help="Mask e-mails, phones, card/account numbers, IPs, keys in what is sent"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print one prompt and where it would go; send nothing"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Requests in flight [default: 8]"),
    max_requests: Optional[int] = typer.Option(None, "--max-requests", help="Stop after sending this many requests "
                                               "(retries and resumed runs included), keeping what was accepted"),
    prompt_template: Optional[Path] = typer.Option(None, "--prompt-template", help="Replace the prompt file"),
    preferences: bool = typer.Option(False, "--preferences", help="Preference pairs instead: --model answers the "
                                     "prompts of --data (sampled), a judge picks the better of two, in both orders"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="--preferences: the sft dataset whose prompts "
                                       "are answered"),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", envvar="PRIVTUNE_JUDGE_URL",
                                            help="--preferences: OpenAI-compatible judge"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", envvar="PRIVTUNE_JUDGE_MODEL"),
    reward_model: Optional[str] = typer.Option(None, "--reward-model", help="--preferences: a reward model "
                                               "artifact scores the answers instead of a judge (best vs worst)"),
    overrides: List[str] = SetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    force: bool = ForceOpt,
):
    """Have a teacher model write instruction data from a few seeds or your documents; or, with
    --preferences, make judged preference pairs from a model's own answers."""
    from privtune.config import apply_overrides, build_config
    from privtune.endpoint import Endpoint
    from privtune.generate import stage
    from privtune.ui import console

    if preferences:
        return _judged_preferences(model, data, judge_url, judge_model, num, api_key_env, allow_remote, overrides,
                                   workspace, force, reward_model)

    settings = {k: v for k, v in {"num": num, "concurrency": concurrency, "max_requests": max_requests,
                                  "prompt_template": str(prompt_template) if prompt_template else None}.items()
                if v is not None}
    config = build_config(stage.GenerateConfig, apply_overrides(settings, overrides, {}), source="command line")
    if not teacher_url or not teacher_model:
        raise PrivtuneError("no teacher configured", field="--teacher-url",
                            hint="pass --teacher-url and --teacher-model (or PRIVTUNE_TEACHER_URL/_MODEL); e.g. "
                                 "Ollama: http://127.0.0.1:11434/v1, vLLM: http://127.0.0.1:8000/v1")
    endpoint = Endpoint(teacher_url, teacher_model, api_key_env=api_key_env, timeout=config.timeout,
                        max_retries=config.retries, allow_remote=allow_remote)
    if dry_run:
        source = stage.load_source(seeds, docs, config)
        typer.echo(stage.dry_run(endpoint, source, config, stage.template_text(config, source.mode), redact_text,
                                 model=model, workspace=_workspace(workspace)))
        return
    artifact, found = stage.run(endpoint, model, config, _workspace(workspace), seeds=seeds, docs=docs,
                                redact_text=redact_text, force=force)
    if found:
        console.print(f"found an identical dataset, not regenerated (--force to redo): {artifact.path}")
    else:
        _print_table("generate", stage.summary_rows(artifact))
    typer.echo(f"dataset {artifact.id} -> {artifact.path}")


def _judged_preferences(model, data, judge_url, judge_model, num, api_key_env, allow_remote, overrides, workspace,
                        force, reward_model=None) -> None:
    """`privtune generate --preferences`: privtune.generate.preferences, from the command line."""
    from privtune.config import apply_overrides, build_config
    from privtune.endpoint import Endpoint
    from privtune.generate import preferences
    from privtune.ui import console

    if not data:
        raise PrivtuneError("--preferences needs --data: the sft dataset whose prompts the model answers",
                            field="--data")
    if reward_model and (judge_url or judge_model):
        raise PrivtuneError("--reward-model or a judge (--judge-url), not both", field="--reward-model")
    if not reward_model and not (judge_url and judge_model):
        raise PrivtuneError("--preferences needs a judge: --judge-url and --judge-model (or --reward-model)",
                            field="--judge-url", hint="e.g. privtune serve of a bigger model, Ollama or vLLM on "
                            "this machine")
    config = build_config(preferences.PreferenceConfig, apply_overrides({"num": num} if num else {}, overrides, {}),
                          source="command line")
    judge = None if reward_model else Endpoint(judge_url, judge_model, api_key_env=api_key_env,
                                               allow_remote=allow_remote, url_flag="--judge-url")
    artifact, found = preferences.run(model, data, judge, config, _workspace(workspace), force=force,
                                      reward_model=reward_model)
    if found:
        console.print(f"found an identical preference dataset, not regenerated (--force to redo): {artifact.path}")
    metrics = artifact.manifest["metrics"]
    judged = metrics["judge"]
    _print_table("generate --preferences", [(key, str(judged[key])) for key in (
        "compared", "kept", "ties", "disagreed", "unparsed", "failed", "identical") if key in judged] + [
        ("judge agreement (both orders)", f"{judged['agreement']:.2f}" if judged.get("agreement") is not None
         else "-")] * ("agreement" in judged) + [
        ("train / validation / test", " / ".join(str(metrics["splits"][s]) for s in ("train", "validation", "test")))])
    typer.echo(f"dataset {artifact.id} -> {artifact.path}")


@app.command("filter")
@handles_errors
def filter_dataset(
    data: str = typer.Option(..., "--data", "-d", help="Dataset artifact id or path (prep's or generate's)"),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", envvar="PRIVTUNE_JUDGE_URL",
                                            help="OpenAI-compatible judge that rates each example 1-5"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", envvar="PRIVTUNE_JUDGE_MODEL"),
    min_score: Optional[int] = typer.Option(None, "--min-score", help="Keep examples rated at least this [default: 3]"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Variable holding the judge's API key"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a judge off this machine (it sees the data)"),
    overrides: List[str] = SetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    force: bool = ForceOpt,
):
    """Have a judge rate every example 1-5 (request clear, input consistent, response correct and complete)
    and keep those rated at least --min-score, as a new dataset."""
    from privtune.config import apply_overrides, build_config
    from privtune.endpoint import Endpoint
    from privtune.generate import quality
    from privtune.ui import console

    if not (judge_url and judge_model):
        raise PrivtuneError("filter needs a judge: --judge-url and --judge-model", field="--judge-url",
                            hint="e.g. privtune serve --batching of an instruct model, Ollama or vLLM on this machine")
    config = build_config(quality.FilterConfig, apply_overrides({"min_score": min_score} if min_score else {},
                                                                overrides, {}), source="command line")
    judge = Endpoint(judge_url, judge_model, api_key_env=api_key_env, allow_remote=allow_remote, url_flag="--judge-url")
    artifact, found = quality.run(data, judge, config, _workspace(workspace), force=force)
    if found:
        console.print(f"found an identical filtered dataset, not redone (--force to redo): {artifact.path}")
    _print_table("filter", quality.summary_rows(artifact))
    typer.echo(f"dataset {artifact.id} -> {artifact.path}")


@app.command()
@handles_errors
def train(
    data: str = typer.Option(..., "--data", "-d", help="Dataset artifact id/path, or a records file (prepped first)"),
    model: str = typer.Option(..., "--model", "-m", help="Base model: path, hub id, or model artifact id"),
    recipe: str = typer.Option("lora", "--recipe", "-r", help="full, lora, qlora, prompt-tuning, or a YAML path"),
    overrides: List[str] = SetOpt,
    merge: bool = typer.Option(False, "--merge", help="Also save adapter merged into full weights (safetensors, "
                               "base dtype); an existing run is merged in place, not retrained"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue an interrupted run from its last checkpoint"),
    report_to: Optional[str] = typer.Option(None, "--report-to", help="none, wandb, tensorboard, trackio"),
    wandb_sync: bool = typer.Option(False, "--wandb-sync", help="Let wandb upload (it runs offline otherwise)"),
    num_gpus: int = typer.Option(1, "--num-gpus", help="Launch on N GPUs through accelerate"),
    accelerate_config: Optional[Path] = typer.Option(None, "--accelerate-config", help="accelerate config: a path, or accelerate/ddp or accelerate/fsdp (privtune recipes)"),
    workspace: Optional[Path] = WorkspaceOpt,
    force: bool = ForceOpt,
):
    """Fine-tune a model on a dataset with a recipe (full, lora, qlora, prompt-tuning)."""
    if num_gpus > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch_with_accelerate(num_gpus, accelerate_config)
        return
    from privtune.config import load_recipe
    from privtune.pipeline import dataset_for_training
    from privtune.train import stage as sft
    from privtune.train.config import TrainConfig
    from privtune.ui import console

    extra = [f"report_to={report_to}"] if report_to else []
    config, path = load_recipe(TrainConfig, recipe, [*overrides, *extra])
    console.print(f"recipe: {path} (method {config.method})")
    options = sft.TrainOptions(force=force, resume=resume, merge=merge, wandb_sync=wandb_sync)
    store = _workspace(workspace)
    dataset = dataset_for_training(data, model, store)
    artifact, found = sft.run(str(dataset.path), model, config, store, options)
    if found:
        console.print(f"found an identical model, not retrained (--force to redo): {artifact.path}")
    else:
        from privtune.contract import ModelArtifact

        metrics = ModelArtifact.of(artifact).metrics
        _print_table("train", [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()])
    typer.echo(f"model {artifact.id} -> {artifact.path}")


def _relaunch_with_accelerate(num_gpus: int, config: Optional[Path]) -> None:
    """Run this same command under `accelerate launch`, one process per GPU."""
    import subprocess

    argv = sys.argv[1:]
    cleaned, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--num-gpus", "--accelerate-config"):
            skip = True
            continue
        if arg.startswith(("--num-gpus=", "--accelerate-config=")):
            continue
        cleaned.append(arg)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_gpus)]
    if config:
        from privtune.config import find_recipe

        command += ["--config_file", str(find_recipe(str(config)))]  # a path, or a name like accelerate/fsdp
    raise typer.Exit(subprocess.call([*command, "-m", "privtune", *cleaned]))


@app.command("eval")
@handles_errors
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="Model artifact id or path to evaluate"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Compare against [default: the model's base]"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset artifact [default: the model's, test split]"),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", envvar="PRIVTUNE_JUDGE_URL", help="OpenAI-compatible judge"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", envvar="PRIVTUNE_JUDGE_MODEL"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Variable holding the judge's API key"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a judge off this machine (it sees held-out data)"),
    lm_eval: Optional[str] = typer.Option(None, "--lm-eval", help="lm-evaluation-harness tasks, comma-separated "
                                          "(extra: privtune[lm-eval])"),
    lm_eval_include: Optional[Path] = typer.Option(None, "--lm-eval-include", help="Folder of your own task YAMLs"),
    overrides: List[str] = SetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    force: bool = ForceOpt,
):
    """Score a fine-tuned model against its baseline on held-out data."""
    from privtune.config import apply_overrides, build_config
    from privtune.endpoint import Endpoint
    from privtune.eval import stage
    from privtune.ui import console

    config = build_config(stage.EvalConfig, apply_overrides({}, overrides, {}), source="command line")
    judge = None
    if judge_url or judge_model:
        if not (judge_url and judge_model):
            raise PrivtuneError("a judge needs both --judge-url and --judge-model", field="--judge-url")
        judge = Endpoint(judge_url, judge_model, api_key_env=api_key_env, allow_remote=allow_remote,
                         url_flag="--judge-url")
        judge.check()
    tasks = None
    if lm_eval:
        from privtune.eval.harness import parse_tasks

        tasks = parse_tasks(lm_eval)
    artifact, found = stage.run(model, config, _workspace(workspace), baseline=baseline, data=data, judge=judge,
                                lm_eval=tasks, lm_eval_include=lm_eval_include, force=force)
    if found:
        console.print(f"found an identical evaluation (--force to redo): {artifact.path}")
    _print_compare([artifact])
    for note in artifact.manifest.get("notes", []):
        console.print(f"note: {note}")
    typer.echo(f"eval {artifact.id} -> {artifact.path}")


@app.command()
@handles_errors
def compare(refs: List[str] = typer.Argument(..., help="Eval artifact ids"), workspace: Optional[Path] = WorkspaceOpt):
    """One table across evaluations."""
    ws = _workspace(workspace)
    artifacts = []
    for ref in refs:
        artifact = ws.resolve(ref, kind="eval")
        if artifact is None:
            raise PrivtuneError(f"no eval artifact '{ref}'", hint="privtune runs lists them")
        artifacts.append(artifact)
    _print_compare(artifacts)


def _print_compare(artifacts) -> None:
    from privtune.eval.report import compare_table
    from privtune.ui import console

    ranked = [a for a in artifacts if a.manifest["metrics"].get("kind") == "preference"]
    for artifact in ranked:  # a preference eval's figures are its own: its report's table
        console.print((artifact.path / "report.md").read_text(encoding="utf-8"), markup=False, soft_wrap=True)
    if len(ranked) < len(artifacts):
        console.print(compare_table([a for a in artifacts if a not in ranked]))


@app.command()
@handles_errors
def serve(
    model: str = typer.Argument(..., help="Model artifact id or path (adapters are applied)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 127.0.0.1 keeps it on this machine"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="PRIVTUNE_SERVE_API_KEY",
                                          help="Require this bearer token (prefer the environment variable)"),
    trusted_network: bool = typer.Option(False, "--trusted-network", help="Allow a non-loopback --host without "
                                         "an API key: everyone on that network may use the model"),
    max_body_bytes: int = typer.Option(1024 * 1024, "--max-body-bytes", min=1,
                                       help="Refuse larger request bodies (413) before reading them"),
    max_prompt_tokens: Optional[int] = typer.Option(None, "--max-prompt-tokens", min=1,
                                                    help="Refuse longer prompts (400); default: the model's context"),
    name: Optional[str] = typer.Option(None, "--name", help="Model name clients send [default: artifact id or folder]"),
    batching: bool = typer.Option(False, "--batching", help="Batch concurrent requests continuously (transformers' "
                                  "continuous batching): more throughput under load; a request's seed is not kept"),
    kv_cache_tokens: int = typer.Option(16384, "--kv-cache-tokens", min=64, help="--batching: KV-cache size in tokens "
                                        "for all requests in flight (memory is reserved at start)"),
    workspace: Optional[Path] = WorkspaceOpt,
):
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions)."""
    from privtune.models.inference import load_for_inference
    from privtune.serve.app import check_port, create_app, exposure_warning, run_server
    from privtune.ui import console, quiet_libraries

    warning = exposure_warning(host, api_key, trusted_network)  # before the model loads: fail fast
    check_port(host, port)
    quiet_libraries()
    loaded = load_for_inference(model, _workspace(workspace))
    served = name or (loaded.artifact_id or Path(model).name)
    if warning:
        console.print(f"[bold red]WARNING:[/] {warning}", highlight=False)
    console.print(f"serving '{served}' at http://{host}:{port}/v1 (model name: {served})")
    run_server(create_app(loaded, served, api_key, max_body_bytes=max_body_bytes, max_prompt_tokens=max_prompt_tokens,
                          batching=batching, kv_cache_tokens=kv_cache_tokens), host, port)


@app.command("import")
@handles_errors
def import_model(
    gguf: Path = typer.Argument(..., help="A .gguf file (e.g. from Ollama or llama.cpp), or a folder holding one"),
    template: Optional[str] = typer.Option(None, "--template", help="Chat template when the file has none (or to "
                                           "replace it): chatml, alpaca, a .jinja file, or none"),
    workspace: Optional[Path] = WorkspaceOpt,
    force: bool = ForceOpt,
):
    """Convert a GGUF model into a model artifact (any --model also accepts a .gguf and does this once)."""
    from privtune.models.gguf import find_gguf, import_gguf
    from privtune.ui import console

    path = find_gguf(str(gguf))
    if path is None:
        raise PrivtuneError("not a .gguf file nor a folder holding one", source=str(gguf), field="GGUF")
    artifact, found = import_gguf(path, _workspace(workspace), template, force=force)
    if found:
        console.print(f"found an identical import, not converted again (--force to redo): {artifact.path}")
    typer.echo(f"model {artifact.id} -> {artifact.path}")


@app.command()
@handles_errors
def export(
    model: str = typer.Argument(..., help="Model artifact id or path (an adapter is merged into its base first)"),
    to: str = typer.Option("gguf", "--to", help="gguf (llama.cpp, Ollama) or merged (safetensors for vLLM; alias vllm)"),
    quant: List[str] = typer.Option(["f16"], "--quant", "-q", help="GGUF type, repeatable or comma-separated: f16, "
                                    "q8_0, q4_k_m (needs llama-quantize)"),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the files and the Ollama commands"),
    prompts: int = typer.Option(8, "--prompts", help="Held-out prompts each GGUF is checked on against the merged "
                                "model (0: read-back checks only)"),
    quantizer: Optional[str] = typer.Option(None, "--quantizer", help="Path of llama.cpp's llama-quantize "
                                            "[default: found on PATH]"),
    workspace: Optional[Path] = WorkspaceOpt,
    force: bool = ForceOpt,
):
    """Export a model as GGUF files + Ollama Modelfile (verified), or as merged safetensors for vLLM."""
    from privtune.export import stage
    from privtune.ui import console

    config = stage.ExportConfig(to=to, quants=tuple(quant), name=name, prompts=prompts, quantizer=quantizer)
    artifact, found = stage.run(model, config, _workspace(workspace), force=force)
    if found:
        console.print(f"found an identical export, not redone (--force to redo): {artifact.path}")
    _print_export(artifact)
    typer.echo(f"export {artifact.id} -> {artifact.path}")


def _print_export(artifact) -> None:
    from rich.table import Table

    from privtune.contract import ExportArtifact
    from privtune.export.stage import TABLE_HEADER, table_rows
    from privtune.ui import console

    export = ExportArtifact.of(artifact)
    if export.to == "merged":
        console.print(f"merged safetensors + tokenizer + generation config (eos {export.stop_token_ids}): "
                      f"vllm serve {export.path / 'merged'}", highlight=False, markup=False)
        return
    table = Table(*(h for h in TABLE_HEADER if h != "file"), title=f"export ({export.verification_prompts})")
    for quant, _, *cells in table_rows(artifact.manifest):  # the file names are in the README and the manifest
        table.add_row(quant, *cells)
    console.print(table)
    console.print(f"cd {export.path} && ollama create {export.name.lower()} -f Modelfile (stops: "
                  f"{', '.join(export.ollama.get('stop', []))})", highlight=False, markup=False)


@app.command("base-model")
@handles_errors
def base_model(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the model to"),
    text: List[Path] = typer.Option(..., "--text", help="Local text to train the tokenizer on; repeatable"),
    architecture: str = typer.Option("llama", "--architecture", help="llama, qwen2 or t5"),
    overrides: List[str] = SetOpt,
):
    """Build a small random-init base model offline (for demos and tests; no hub needed)."""
    from privtune.config import apply_overrides, build_config
    from privtune.models.tiny import TinyModelConfig, build_tiny_model

    config = build_config(TinyModelConfig, apply_overrides({"architecture": architecture}, overrides, {}),
                          source="command line")
    path = build_tiny_model(out, text, config)
    typer.echo(f"base model -> {path}")


@app.command()
@handles_errors
def runs(workspace: Optional[Path] = WorkspaceOpt):
    """List artifacts, newest first, with their lineage."""
    from rich.table import Table

    from privtune.ui import console

    artifacts, damaged = _workspace(workspace).scan()
    if not artifacts and not damaged:
        console.print("no artifacts yet")
        return
    table = Table("id", "kind", "created", "parents", "summary")
    for artifact in artifacts:
        m = artifact.manifest
        summary = ", ".join(f"{k}={v}" for k, v in list(_headline(m).items())[:3])
        table.add_row(artifact.id, artifact.kind, str(m.get("created", "")), " ".join(map(str, m.get("parents", []))),
                      summary)
    if artifacts:
        console.print(table)
    for path, problem in damaged:
        console.print(f"[bold red]damaged:[/] {path.name}: {problem.message}", highlight=False, soft_wrap=True)
    if damaged:
        console.print(damaged[0][1].hint, highlight=False)


@app.command()
@handles_errors
def gc(
    staging: bool = typer.Option(False, "--staging", help="Also remove interrupted work (which a re-run would resume); not while a stage runs"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing"),
    workspace: Optional[Path] = WorkspaceOpt,
):
    """Remove damaged artifacts and what replaced ones left behind; finished artifacts are never touched."""
    import shutil

    from privtune.ui import console

    paths = _workspace(workspace).leftovers(staging=staging)
    if not paths:
        console.print("nothing to remove")
        return
    for path in paths:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
        console.print(f"{'would remove' if dry_run else 'removing'} {path} ({size / 2**20:.1f} MiB)", highlight=False)
        if dry_run:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _headline(manifest: dict) -> dict:
    metrics = manifest.get("metrics", {})
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


@app.command()
@handles_errors
def show(ref: str = typer.Argument(..., help="Artifact id, id prefix, or path"),
         workspace: Optional[Path] = WorkspaceOpt):
    """Show an artifact's manifest and files."""
    artifact = _workspace(workspace).resolve(ref)
    if artifact is None:
        raise PrivtuneError(f"no artifact '{ref}'", hint="privtune runs lists them")
    typer.echo(json.dumps(artifact.manifest, indent=2))
    typer.echo("files:")
    for path in sorted(artifact.path.rglob("*")):
        if path.is_file():
            typer.echo(f"  {path.relative_to(artifact.path)}  ({path.stat().st_size} bytes)")


@app.command()
@handles_errors
def validate(
    recipe: Optional[str] = typer.Argument(None, help="Recipe name or YAML path to check"),
    overrides: List[str] = SetOpt,
    keys: bool = typer.Option(False, "--keys", help="List every recipe key (for --set) with its type, default and meaning"),
):
    """Check a training recipe and --set overrides without running anything; every problem is listed."""
    from privtune.config import config_dict, field_docs, load_recipe
    from privtune.train.config import TrainConfig
    from privtune.ui import console

    if keys:
        for key, (kind, default, doc) in field_docs(TrainConfig).items():  # plain lines: greppable, no wrapping
            typer.echo(f"{key} = {default}  ({kind})\n    {doc}")
        return
    if recipe is None:
        raise PrivtuneError("give a recipe to check, or --keys to list them", field="RECIPE")
    config, path = load_recipe(TrainConfig, recipe, overrides)
    import yaml

    console.print(f"ok: {path} is a valid {config.method} recipe; resolved, with every default:")
    typer.echo(yaml.safe_dump(config_dict(config), sort_keys=False), nl=False)


recipes_app = typer.Typer(help="List the training recipes (shipped, and ./recipes); `show NAME` prints one to copy.",
                          invoke_without_command=True, no_args_is_help=False)
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback()
def recipes(ctx: typer.Context):
    """List the training recipes: the ones privtune ships, and ./recipes (which shadows them)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from privtune.config import SHIPPED_RECIPES, list_recipes, recipe_summary
    from privtune.ui import console

    table = Table("recipe", "what it is for", "from")
    for name, path in list_recipes().items():
        table.add_row(name, recipe_summary(path), "shipped" if path.is_relative_to(SHIPPED_RECIPES) else str(path))
    console.print(table)
    console.print("privtune recipes show NAME > my.yaml, edit it, then privtune train --recipe my.yaml")


@recipes_app.command("show")
@handles_errors
def show_recipe(name: str = typer.Argument(..., help="A recipe name from `privtune recipes`")):
    """Print a recipe's YAML, to copy and edit."""
    from privtune.config import find_recipe

    typer.echo(find_recipe(name).read_text(encoding="utf-8"), nl=False)


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    from privtune.ui import console

    table = Table(title=title, show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
