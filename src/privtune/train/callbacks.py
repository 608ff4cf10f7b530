"""Trainer callbacks: a rich progress bar, a JSONL metrics log, checkpoint completion markers, a
per-epoch sampler seed that makes resume exact, and torch threads that follow the machine's load."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from privtune.runtime import ThreadsFollower
from privtune.ui import console, progress_bar

COMPLETE_MARKER = ".privtune-complete"


class MetricsLog(TrainerCallback):
    """Append every log line (loss, lr, eval loss, tokens) to metrics.jsonl, flushed as it comes."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                                         **logs}) + "\n")


class MarkCompleteCheckpoints(TrainerCallback):
    """Mark a checkpoint complete once the trainer has written all of it.

    The trainer writes `checkpoint-N/` in place; a run killed mid-save leaves a partial folder.
    Resume takes only checkpoints carrying the marker. The marker also records how many lines
    metrics.jsonl had then, for `rewind_metrics`.
    """

    def __init__(self, metrics: Path | None = None):
        self.metrics = metrics

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                lines = self.metrics.read_bytes().count(b"\n") if self.metrics and self.metrics.is_file() else 0
                (folder / COMPLETE_MARKER).write_text(json.dumps({"step": state.global_step, "metrics_lines": lines}))


def rewind_metrics(path: Path, checkpoint: Path) -> None:
    """Cut metrics.jsonl back to the lines it had when `checkpoint` was complete.

    The interrupted run logged past its last complete checkpoint (its last line perhaps torn by the
    kill); the resumed run logs those steps again, which would otherwise appear twice.
    """
    from privtune.artifacts import write_atomic

    try:
        keep = json.loads((checkpoint / COMPLETE_MARKER).read_text())["metrics_lines"]
    except (ValueError, KeyError, TypeError):
        return  # a marker from an older privtune: keep the log as it is
    if path.is_file():
        write_atomic(path, "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep]))


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint with a completion marker, or None."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


class SeedSamplerPerEpoch(TrainerCallback):
    """Seed the length-grouped train sampler from (data seed, epoch) as each epoch begins.

    transformers' LengthGroupedSampler (group_by_length) shuffles with torch's global RNG when the
    epoch's iterator is made. A run resumed mid-epoch makes that iterator before it restores the
    checkpoint's RNG state, so the resumed epoch got another order than the uninterrupted run had
    (and diverged from the first resumed step). With its own generator, seeded per epoch, the order
    depends only on the seed and the epoch; packed and seq2seq runs use accelerate's
    SeedableRandomSampler, which does this already.
    """

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        import torch
        from transformers.trainer_pt_utils import LengthGroupedSampler

        node = train_dataloader  # DataLoader(Shard) -> [BatchSamplerShard ->] BatchSampler -> sampler
        for _ in range(4):
            child = getattr(node, "batch_sampler", None)
            node = child if child is not None else getattr(node, "sampler", None)
            if isinstance(node, LengthGroupedSampler):
                if node.generator is None:
                    node.generator = torch.Generator()
                seed = args.data_seed if args.data_seed is not None else args.seed
                node.generator.manual_seed(seed + int(state.epoch))  # epoch e begins at e.0; a resume at e.x
                return


class RichProgress(TrainerCallback):
    """Progress bar showing loss, learning rate, tokens/s and ETA (replaces the tqdm one)."""

    def __init__(self):
        self.bar = None
        self.task = None
        self.last_tokens = None
        self.fields = {"loss": "-", "lr": "-", "tok_s": "-"}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = progress_bar()
            self.bar.columns = (*self.bar.columns, "loss {task.fields[loss]}  lr {task.fields[lr]}  "
                                                   "{task.fields[tok_s]} tok/s")
            self.bar.start()
            self.task = self.bar.add_task("training", total=state.max_steps, completed=state.global_step,
                                          **self.fields)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.fields["loss"] = f"{logs['loss']:.4f}"
        if "learning_rate" in logs:
            self.fields["lr"] = f"{logs['learning_rate']:.2e}"
        if "num_tokens" in logs:
            now = (time.time(), logs["num_tokens"])
            if self.last_tokens and now[0] > self.last_tokens[0] and now[1] >= self.last_tokens[1]:
                self.fields["tok_s"] = f"{(now[1] - self.last_tokens[1]) / (now[0] - self.last_tokens[0]):,.0f}"
            self.last_tokens = now
        self.bar.update(self.task, **self.fields)
        if not console.is_terminal and "loss" in logs:
            console.print(f"step {state.global_step}/{state.max_steps}  loss {self.fields['loss']}  "
                          f"lr {self.fields['lr']}  {self.fields['tok_s']} tok/s")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class ThreadsFollowLoad(ThreadsFollower, TrainerCallback):
    """runtime.ThreadsFollower re-read after every training step and evaluation batch."""

    def on_step_end(self, args, state, control, **kwargs):
        self.follow(state.global_step)

    def on_prediction_step(self, args, state, control, **kwargs):
        self.follow(state.global_step)
