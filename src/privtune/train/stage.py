"""`privtune train`: a dataset artifact + a base model -> a model artifact (adapter and/or weights).

Decoder-only models train through TRL's SFTTrainer on the token ids and trained-token masks that
prep wrote; PEFT adds adapters, bitsandbytes the 4-bit base. Encoder-decoder models (T5 family)
take transformers' Seq2SeqTrainer (see seq2seq.py). The run works in the staging directory of its
artifact, checkpointing there, so re-running the same command after a crash resumes.
"""

from __future__ import annotations


import errno
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from privtune.artifacts import Artifact, Result, Workspace, stable_hash
from privtune.contract import DatasetArtifact
from privtune.config import config_dict
from privtune.errors import PrivtuneError
from privtune.models.loading import ModelRef, load_tokenizer, resolve_model
from privtune.contract import dataset_artifact
from privtune.train.callbacks import (MarkCompleteCheckpoints, MetricsLog, RichProgress, SeedSamplerPerEpoch,
                                      ThreadsFollowLoad, last_complete_checkpoint, rewind_metrics)
from privtune.train.config import TrainConfig
from privtune.train.method import Method, method_of
from privtune.runtime import environment
from privtune.ui import console, quiet_libraries


@dataclass
class TrainOptions:
    """What the command line adds to the recipe: not part of the artifact's identity."""

    force: bool = False
    resume: bool = True
    merge: bool = False
    wandb_sync: bool = False


def check_tokenizer(dataset: DatasetArtifact, tokenizer) -> None:
    """Refuse a dataset tokenized for another model: the token ids would mean nothing."""
    from privtune.data.render import tokenizer_fingerprint

    if tokenizer_fingerprint(tokenizer, dataset.chat_template) != dataset.tokenizer_fingerprint:
        raise PrivtuneError(f"dataset {dataset.id} was tokenized for another model ({dataset.model})",
                            field="--data", hint="re-run `privtune prep` with this --model")


def adopt_dataset_template(tokenizer, dataset: DatasetArtifact) -> dict:
    """Give the tokenizer the chat template the dataset was rendered with; returns where it came from.

    The model learns the prompt format of its training data, and eval and serve prompt it with the
    template saved in its tokenizer. Saving the base tokenizer's template instead would have a
    model prepped with `--template alpaca` prompted in ChatML for ever after.
    """
    import hashlib

    template = dataset.chat_template
    named = dataset.template_name
    changed = template != tokenizer.chat_template
    tokenizer.chat_template = template
    if changed:
        console.print(f"chat template: '{named}', as dataset {dataset.id} was rendered; saved with the model")
    return {"chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
            "chat_template_source": {"dataset": dataset.id, "template": named, "differs_from_base": changed}}


def precision_flags(config: TrainConfig) -> dict:
    """bf16 where the GPU has it, else fp16 on GPU; fp32 on a CPU. `precision: bf16` on a CPU with native
    bf16 (AVX512-BF16, AMX) trains under bf16 autocast, weights kept fp32: LoRA on SmolLM2-135M ran
    ~1.5x faster (72 against 47 supervised tok/s), but its validation loss after 30 steps was 0.324
    against fp32's 0.285 (make bench), so it is asked for, not the default. `_dtype` is what the weights load in."""
    import torch

    from privtune.runtime import cpu_has_bf16

    on_gpu = torch.cuda.is_available()
    choice = config.precision
    if choice == "auto":
        choice = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
    needs = {"fp16": "a GPU", "bf16": "a GPU or a CPU with native bf16 (AVX512-BF16, AMX)"}
    if not on_gpu and choice in needs and (choice == "fp16" or not cpu_has_bf16()):
        raise PrivtuneError(f"precision {choice} needs {needs[choice]}; this machine has none", field="precision",
                            hint="use --set precision=fp32 (or auto)")
    return {"bf16": choice == "bf16", "fp16": choice == "fp16", "use_cpu": not on_gpu,
            "_dtype": choice if on_gpu else "fp32"}


def load_model(model: ModelRef, method: Method, config: TrainConfig, dtype_name: str):
    """The base model as `from_pretrained` gives it, loaded and prepared as the method asks (4-bit for qlora).

    A model artifact that is an adapter without merged weights (an SFT run without --merge) is refused with
    the way out: a new adapter trained on it in memory would record a base that is itself an adapter,
    which nothing that loads models (eval, serve, export) could load back."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if model.artifact is not None and model.artifact.needs_base:
        raise PrivtuneError(f"model {model.artifact.id} is an adapter without merged weights; train on a merged "
                            "model", field="--model", hint="re-run the command that trained it with --merge "
                            "(merges in place, no retraining), then pass the same model id")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype_name, torch.float32)
    kwargs: dict = {"dtype": dtype, **method.load_kwargs(config, dtype)}
    try:
        model_config = AutoConfig.from_pretrained(model.location)
        auto = AutoModelForSeq2SeqLM if model_config.is_encoder_decoder else AutoModelForCausalLM
        if method.head == "score":
            from transformers import AutoModelForSequenceClassification

            auto, kwargs["num_labels"] = AutoModelForSequenceClassification, 1
        loaded = auto.from_pretrained(model.location, **kwargs)
    except (OSError, ValueError) as exc:
        raise PrivtuneError(f"cannot load model '{model.location}': {str(exc).splitlines()[0]}", field="--model",
                            hint="check the path, or that the hub is reachable for a hub id") from None
    return method.prepare(loaded, config)


def peft_config(method: Method, config: TrainConfig, model, is_seq2seq: bool):
    """The method's PEFT config for this model's task, or None when the weights themselves train."""
    from peft import TaskType

    return method.peft_config(config, model, TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM)


def threads_following_load(config: TrainConfig) -> list:
    """A ThreadsFollowLoad callback, started, when privtune picks the thread count itself on a CPU and
    can see the machine's load (Linux); none when the recipe or PRIVTUNE_THREADS sets it."""
    from privtune import runtime

    follow = runtime.start_following_load(config.threads, ThreadsFollowLoad)
    return [follow] if follow else []


def trainer_arguments(config: TrainConfig, output_dir: Path, flags: dict, has_eval: bool, report_to: str) -> dict:
    """Recipe fields -> transformers/TRL argument names."""
    eval_every = config.eval_steps if config.eval_steps else None
    return dict(
        output_dir=str(output_dir), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, eval_strategy=("steps" if eval_every else "no") if has_eval else "no",
        eval_steps=eval_every, seed=config.seed, data_seed=config.seed, report_to=report_to,
        disable_tqdm=True, push_to_hub=False,
        bf16=flags["bf16"], fp16=flags["fp16"], use_cpu=flags["use_cpu"], dataloader_num_workers=0,
    )


def artifact_id_for(dataset: DatasetArtifact, model: ModelRef, config: TrainConfig) -> str:
    identity = {k: v for k, v in config_dict(config).items() if k not in ("report_to", "logging_steps", "threads")}
    return stable_hash({"stage": "train", "dataset": dataset.id, "model": model.lineage_id, "config": identity})


def run(data: str, model: str, config: TrainConfig, workspace: Workspace,
        options: TrainOptions | None = None) -> Result:
    """Fine-tune `model` on dataset artifact `data` (id or path); returns the model artifact and whether it
    already existed. A records file is prepped first by privtune.pipeline, not here."""
    options = options or TrainOptions()
    model_ref = resolve_model(model, workspace)
    dataset = dataset_artifact(data, workspace)
    tokenizer = load_tokenizer(model_ref)
    check_tokenizer(dataset, tokenizer)
    method = method_of(config.method)
    if dataset.examples != method.examples:
        raise PrivtuneError(f"dataset {dataset.id} holds {dataset.examples} examples; method '{method.name}' trains on "
                            f"{method.examples} examples", field="--data")
    if options.merge and not method.mergeable:  # refuse before training, not after it
        from privtune.models.merge import not_mergeable

        raise not_mergeable("train without --merge and serve the adapter as it is")
    artifact_id = artifact_id_for(dataset, model_ref, config)
    existing = None if options.force else workspace.get("model", artifact_id)
    if existing and not options.force:
        return Result(merge_existing(existing) if options.merge else existing, reused=True)

    from privtune.runtime import apply_threads

    quiet_libraries()
    apply_threads(config.threads)

    template_info = adopt_dataset_template(tokenizer, dataset)
    staging = workspace.stage("model", artifact_id, fresh=options.force or not options.resume)
    checkpoints = staging.path / "checkpoints"
    resume_from = last_complete_checkpoint(checkpoints)
    if resume_from:
        console.print(f"resuming from {resume_from.name}")
        rewind_metrics(staging.path / "metrics.jsonl", resume_from)
    with environment(**tracking_environment(config, options, staging.path)):
        return _train(staging, checkpoints, resume_from, tokenizer, dataset, model_ref, method, config, options,
                      template_info)


def tracking_environment(config: TrainConfig, options: TrainOptions, folder: Path) -> dict[str, str]:
    """What wandb reads, for this run only: offline unless --wandb-sync, its files in this run's folder
    (unless the user set WANDB_DIR), so no earlier run's directory or mode leaks into the next call."""
    if config.report_to != "wandb":
        return {}
    return {"WANDB_MODE": "online" if options.wandb_sync else "offline",
            "WANDB_DIR": os.environ.get("WANDB_DIR") or str(folder)}


def _train(staging, checkpoints: Path, resume_from: Path | None, tokenizer, dataset: DatasetArtifact,
           model_ref: ModelRef, method: Method, config: TrainConfig, options: TrainOptions,
           template_info: dict) -> Result:
    """Load, wrap, train (or resume), evaluate and publish: the run itself, once its folder is ready."""
    import torch

    from transformers import set_seed

    flags = precision_flags(config)
    set_seed(config.seed)  # a new head (reward) and the adapters start from the same weights on every run
    base = load_model(model_ref, method, config, flags["_dtype"])
    is_seq2seq = bool(base.config.is_encoder_decoder)
    adapter = peft_config(method, config, base, is_seq2seq)
    method = replace(method, adapter=adapter is not None)  # a preference method may train in full
    callbacks = [MetricsLog(staging.path / "metrics.jsonl"), MarkCompleteCheckpoints(staging.path / "metrics.jsonl"),
                 RichProgress(), SeedSamplerPerEpoch(), *threads_following_load(config)]
    has_eval = dataset.split_size("validation") > 0
    args = trainer_arguments(config, checkpoints, flags, has_eval, config.report_to)
    trainer = method.build_trainer(base, tokenizer, adapter, dataset, config, args, callbacks)
    start_eval = None  # the held-out figures before training (the loss; a preference method's too)
    if trainer.eval_dataset is not None and resume_from is None:
        start_eval = evaluate_without_touching_rng(trainer)
        _log_line(staging.path / "metrics.jsonl", {"step": 0, "eval_loss": start_eval["eval_loss"]})
    with write_failures_reported(checkpoints):
        try:
            result = train_or_reload(trainer, resume_from)
        except torch.OutOfMemoryError:
            raise PrivtuneError("out of memory", field="batch_size", hint="lower --set batch_size, raise "
                                "gradient_accumulation, lower max_length, or use --recipe qlora") from None
        end_eval = final_eval_loss(trainer)
        return Result(_finish(staging, trainer, tokenizer, dataset, model_ref, method, config, options, is_seq2seq,
                              result, start_eval, end_eval, resume_from, template_info), reused=False)


def preference_figures(log_history: list[dict]) -> dict:
    """A preference method's last held-out figures (TRL logs them as eval_rewards/*; a reward model as
    eval_accuracy/eval_margin): how often the chosen answer's reward beat the rejected one's, and by how much."""
    last = next((entry for entry in reversed(log_history) if "eval_rewards/accuracies" in entry), None)
    if last is not None:
        return {"eval_preference_accuracy": last["eval_rewards/accuracies"],
                "eval_reward_margin": last.get("eval_rewards/margins")}
    scored = [entry for entry in log_history if "eval_accuracy" in entry and "eval_margin" in entry]
    if not scored:  # else a reward model: its score ranks the chosen answer above the rejected one this often
        return {}
    before = scored[0] if "step" not in scored[0] else None  # the evaluation before training has no step
    return {"eval_pairwise_accuracy_start": before and before["eval_accuracy"],
            "eval_pairwise_accuracy": scored[-1]["eval_accuracy"], "eval_reward_margin": scored[-1]["eval_margin"]}


def final_eval_loss(trainer) -> float | None:
    """The validation loss after training, evaluated once.

    With `eval_steps` set, transformers evaluates at the last step too; evaluating again would
    cost a whole pass over the validation split for the same number.
    """
    if trainer.eval_dataset is None:
        return None
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == trainer.state.global_step:
            return entry["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def train_or_reload(trainer, resume_from: Path | None):
    """Train, resuming from `resume_from`; from a checkpoint of the last step, only load it.

    That checkpoint is there when a run failed after training (saving the model on a full disk, a
    kill while publishing). transformers, resumed from it, would train one step past max_steps when
    the run ends mid-epoch: it checks the limit after a step, not before.
    """
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    if resume_from is not None:
        state = TrainerState.load_from_json(str(resume_from / "trainer_state.json"))
        if state.global_step >= state.max_steps > 0:
            trainer._load_from_checkpoint(str(resume_from))  # the weights, as train() would load them
            trainer.state = state
            return TrainOutput(state.global_step, 0.0, {})
    return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)


def write_failure(exc: BaseException) -> str | None:
    """What a write that failed for want of space says (a full disk, a quota, a file-size limit), else None.

    torch.save and safetensors raise no OSError: torch says RuntimeError "[enforce fail at
    inline_container.cc:N] . PytorchStreamWriter failed writing file data/0: file write failed" (or
    "unexpected pos"), safetensors SafetensorError "Error while serializing: I/O error: No space left on
    device (os error 28)".
    """
    if isinstance(exc, OSError):
        return exc.strerror if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else None
    text = str(exc).strip()
    if isinstance(exc, RuntimeError) and any(s in text for s in ("PytorchStreamWriter", "file write failed",
                                                                 "unexpected pos")):
        return text.split("] . ", 1)[-1].splitlines()[0]
    if type(exc).__name__ == "SafetensorError" and "I/O error" in text:
        return text.splitlines()[0]
    return None


@contextmanager
def write_failures_reported(checkpoints: Path):
    """Turn a checkpoint or model write that failed into one clear error naming where a re-run resumes."""
    try:
        yield
    except Exception as exc:  # re-raised below unless it is a failed write
        reason = write_failure(exc)
        if reason is None:
            raise
        last = last_complete_checkpoint(checkpoints)
        resume = f"resumes from {last.name}" if last else "starts over (no checkpoint was complete)"
        raise PrivtuneError(f"cannot write: {reason}", source=getattr(exc, "filename", None) or str(checkpoints.parent),
                            hint=f"the disk may be full: free space, then re-run the same command; it {resume}. "
                                 "Finished artifacts are untouched") from None


def merge_existing(artifact: Artifact) -> Artifact:
    """`--merge` on a finished adapter artifact without merged/: merge it in place, no retraining.

    merged/ is written in a temporary folder inside the artifact and renamed into place, then the
    manifest says `merged: true` (written atomically): a killed merge leaves at most a hidden
    temporary folder (removed by the next attempt), never a half-written merged/ that loading
    would pick up.
    """
    from privtune.artifacts import MANIFEST, write_json_atomic

    merged = artifact.path / "merged"
    if not artifact.manifest.get("adapter"):
        console.print("--merge: this model has full weights already; nothing to merge")
        return artifact
    if merged.is_dir():
        console.print(f"--merge: merged/ is there already: {merged}")
    else:
        _merge_into_place(artifact, merged)
        console.print(f"--merge: merged the adapter of the existing model in place, without retraining: {merged}")
    if not artifact.manifest.get("merged"):
        artifact.manifest["merged"] = True
        write_json_atomic(artifact.path / MANIFEST, artifact.manifest)
    return artifact


def _merge_into_place(artifact: Artifact, merged: Path) -> None:
    """Merge into `.merged-tmp-<pid>` beside merged/, then rename: readers see all of it or none."""
    from privtune.runtime import apply_threads
    from privtune.models.merge import merge_adapter

    apply_threads()
    tmp = artifact.path / f".merged-tmp-{os.getpid()}"
    for stale in artifact.path.glob(".merged-tmp-*"):
        if stale == tmp or not _pid_alive(stale.name.rsplit("-", 1)[-1]):  # not a running merge's folder
            shutil.rmtree(stale, ignore_errors=True)
    try:
        merge_adapter(artifact.manifest["base_model"], artifact.path / "model", tmp,
                      bool(artifact.manifest.get("seq2seq")))
        os.rename(tmp, merged)
    except OSError as exc:
        if not merged.is_dir():  # else a concurrent merge got there first: the same weights
            raise PrivtuneError(f"cannot write merged/: {exc.strerror or exc}", source=str(merged),
                                hint="check free disk space and that the workspace is writable") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def evaluate_without_touching_rng(trainer) -> dict:
    """The validation figures (eval_loss, ...) before training, leaving every RNG as it was.

    A resumed run skips this evaluation; if it consumed random numbers, the data order after a
    resume would differ from an uninterrupted run's.
    """
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        return trainer.evaluate()
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _log_line(path: Path, record: dict) -> None:
    import json
    import time

    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**record, "time": time.time()}) + "\n")


def _finish(staging, trainer, tokenizer, dataset, model_ref, method, config, options, is_seq2seq, result,
            start_eval, end_eval, resume_from, template_info) -> Artifact:
    """Save weights or adapter, merge if asked, plot the curve, drop checkpoints, publish the artifact."""
    from privtune.models.merge import merge_adapter
    from privtune.train.curve import plot_loss_curve, read_metrics

    out = staging.path / "model"
    if out.exists():
        shutil.rmtree(out)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    is_adapter = method.adapter
    if options.merge:
        if not is_adapter:
            console.print("--merge: full fine-tuning already saved full weights; nothing to merge")
        else:
            merge_adapter(model_ref.location, out, staging.path / "merged", is_seq2seq)
    metrics = read_metrics(staging.path / "metrics.jsonl")
    plot_loss_curve(metrics, staging.path / "loss_curve.png")
    losses = [m["loss"] for m in metrics if "loss" in m]
    shutil.rmtree(staging.path / "checkpoints", ignore_errors=True)
    state = trainer.state
    summary = {
        "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
        "eval_loss_start": start_eval and start_eval["eval_loss"], "eval_loss_end": end_eval,
        "steps": state.global_step,
        "epochs": state.epoch, "resumed_from_step": int(resume_from.name.split("-")[-1]) if resume_from else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "thread_changes": next((c.changes for c in trainer.callback_handler.callbacks
                                if isinstance(c, ThreadsFollowLoad)), []),
        **preference_figures([start_eval or {}, *state.log_history]),
    }
    manifest = {
        "stage": "train", "parents": [dataset.id] + ([model_ref.artifact.id] if model_ref.artifact else []),
        "base_model": model_ref.location, "method": config.method, "adapter": is_adapter, "head": method.head,
        "merged": bool(options.merge and is_adapter), "seq2seq": is_seq2seq, "config": config_dict(config),
        "seed": config.seed, "metrics": summary, "device": "cuda" if not trainer.args.use_cpu else "cpu",
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "tokenizer_fingerprint": dataset.tokenizer_fingerprint, **template_info,
    }
    return staging.finish(manifest)

