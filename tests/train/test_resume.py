"""A killed run, re-run with the same command, resumes and ends exactly where an uninterrupted run ends."""

import json
import signal
import subprocess
import sys
import time

import pytest

from privtune.artifacts import Workspace
from privtune.train import stage as sft
from privtune.train.callbacks import MarkCompleteCheckpoints
from tests.conftest import train_config

SETTINGS = {"max_steps": 40, "save_steps": 10, "learning_rate": 2e-3, "epochs": 10}

# 206 training rows in batches of 14: 15 batches an epoch, so with accumulation 2, 8 optimizer steps an
# epoch, the last of one batch; 3 epochs, length-grouped batches, evaluation every 4 steps.
LATER_EPOCHS = {"epochs": 3, "batch_size": 14, "gradient_accumulation": 2, "save_steps": 3, "eval_steps": 4,
                "logging_steps": 1, "learning_rate": 2e-3}


def logged(artifact) -> list[tuple]:
    """Every (step, metric, value) in metrics.jsonl, in order: train loss per step, eval loss."""
    rows = [json.loads(line) for line in (artifact.path / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], key, r[key]) for r in rows for key in ("loss", "eval_loss") if key in r]


def assert_same_run(resumed, straight) -> None:
    got, want = logged(resumed), logged(straight)
    assert [g[:2] for g in got] == [w[:2] for w in want]  # each step logged once: no repeats from the kill
    worst = max(abs(g[2] - w[2]) for g, w in zip(got, want))
    end = abs(resumed.manifest["metrics"]["eval_loss_end"] - straight.manifest["metrics"]["eval_loss_end"])
    assert worst <= 1e-6 and end <= 1e-6, (worst, end)


class Killed(Exception):
    """Stands for the kill: the run dies between two checkpoints."""


@pytest.mark.parametrize("method, kill, checkpoint", [("full", 20, 18), ("lora", 17, 15)])
def test_killed_in_a_later_epoch_resumes_to_identical_losses(method, kill, checkpoint, tickets_dataset, tiny_model,
                                                             tmp_path, monkeypatch):
    """Killed mid-epoch: full in epoch 3 (after checkpoint 18); lora, with dropout, in epoch 2 after checkpoint
    15, one batch before the epoch ends. Every logged loss equals the uninterrupted run's."""
    dropout = {"lora.dropout": 0.05} if method == "lora" else {}  # dropout draws random numbers: resume must replay them
    config = train_config(method, **LATER_EPOCHS, **dropout)
    data, model, workspace = str(tickets_dataset.path), str(tiny_model), Workspace(tmp_path / "killed")
    straight, _ = sft.run(data, model, config, Workspace(tmp_path / "straight"))
    assert straight.manifest["metrics"]["steps"] == 24

    def die(self, args, state, control, **kwargs):
        if state.global_step == kill:
            raise Killed(kill)

    monkeypatch.setattr(MarkCompleteCheckpoints, "on_step_end", die, raising=False)
    with pytest.raises(Killed):
        sft.run(data, model, config, workspace)
    monkeypatch.undo()
    resumed, _ = sft.run(data, model, config, workspace)
    assert resumed.manifest["metrics"]["resumed_from_step"] == checkpoint
    assert_same_run(resumed, straight)


def test_killed_training_resumes_to_the_same_result(tickets_dataset, tiny_model, tmp_path):
    """kill -9 for real, in the second epoch (26 steps an epoch; checkpoint 30 is 4 steps into it)."""
    config = train_config("full", **SETTINGS)
    straight, _ = sft.run(str(tickets_dataset.path), str(tiny_model), config, Workspace(tmp_path / "straight"))

    workspace = tmp_path / "killed"
    overrides = [f"--set={k}={v}" for k, v in {"max_length": 128, "logging_steps": 5, "eval_steps": 0,
                                                  "batch_size": 8, "threads": 1, **SETTINGS}.items()]
    command = [sys.executable, "-m", "privtune", "train", "--recipe", "full", "--data", str(tickets_dataset.path),
               "--model", str(tiny_model), "--workspace", str(workspace), *overrides]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    marker = lambda: list(workspace.glob(".staging/model-*/checkpoints/checkpoint-30/.privtune-complete"))
    while not marker() and time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not [p for p in workspace.iterdir() if p.name.startswith("model-")], "killed run looks finished"

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from checkpoint-" in done.stderr
    resumed = Workspace(workspace).artifacts()[0]
    m, s = resumed.manifest["metrics"], straight.manifest["metrics"]
    assert m["resumed_from_step"] >= 30 and m["steps"] == s["steps"] == 40
    assert_same_run(resumed, straight)
