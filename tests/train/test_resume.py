"""kill -9 in the middle of training, re-run the same command: it resumes and ends where an uninterrupted run ends."""

import json
import signal
import subprocess
import sys
import time

from privtune.artifacts import Workspace
from privtune.train import sft
from tests.conftest import train_config

SETTINGS = {"max_steps": 40, "save_steps": 10, "learning_rate": 2e-3, "epochs": 10}


def test_killed_training_resumes_to_the_same_result(tickets_dataset, tiny_model, tmp_path):
    config = train_config("full", **SETTINGS)
    straight, _ = sft.run(str(tickets_dataset.path), str(tiny_model), config, Workspace(tmp_path / "straight"))

    workspace = tmp_path / "killed"
    overrides = [f"--set={k}={v}" for k, v in {"max_length": 128, "logging_steps": 5, "eval_steps": 0,
                                                  "batch_size": 8, "threads": 1, **SETTINGS}.items()]
    command = [sys.executable, "-m", "privtune", "train", "--recipe", "full", "--data", str(tickets_dataset.path),
               "--model", str(tiny_model), "--workspace", str(workspace), *overrides]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    marker = lambda: list(workspace.glob(".staging/model-*/checkpoints/checkpoint-20/.privtune-complete"))
    while not marker() and time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not [p for p in workspace.iterdir() if p.name.startswith("model-")], "killed run looks finished"

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from checkpoint-" in done.stderr
    resumed = Workspace(workspace).artifacts()[0]
    m, s = resumed.manifest["metrics"], straight.manifest["metrics"]
    assert m["resumed_from_step"] >= 20 and m["steps"] == s["steps"] == 40
    assert abs(m["eval_loss_end"] - s["eval_loss_end"]) <= 1e-4 * s["eval_loss_end"], (m, s)
    # the per-step training losses after the resume point match too
    log = lambda a: {(r["step"], round(r["loss"], 4)) for r in map(json.loads, (a.path / "metrics.jsonl").open())
                     if "loss" in r and r["step"] > m["resumed_from_step"]}
    assert log(resumed) == log(straight)
