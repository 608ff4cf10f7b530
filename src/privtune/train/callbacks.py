"""Trainer callbacks: a rich progress bar, a JSONL metrics log, and checkpoint completion markers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

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
    Resume takes only checkpoints carrying the marker.
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / COMPLETE_MARKER).write_text(str(state.global_step))


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint with a completion marker, or None."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


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
