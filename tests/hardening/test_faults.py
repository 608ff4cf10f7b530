"""Faults injected for real: kill -9 at random points, a full disk, a read-only workspace.

(kill -9 during train and its exact resume: tests/train/test_resume.py; during prep:
tests/data/test_prep.py.)
"""

import errno
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privtune.artifacts import Workspace
from privtune.train import stage as sft
from tests.conftest import ROOT, train_config
from tests.fake_teacher import FakeTeacher

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def finished(workspace: Path, kind: str) -> list[Path]:
    return [p for p in workspace.glob(f"{kind}-*") if (p / "manifest.json").is_file()] if workspace.exists() else []


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_when(command: list[str], ready, timeout: float = 120) -> None:
    """Start the command, wait until `ready()` holds, then SIGKILL it."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the point to kill at never came"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_generate_killed_at_five_random_points_resumes_to_exactly_n(tiny_model, tmp_path):
    num, workspace = 120, tmp_path / "runs"
    points = sorted(random.Random(7).sample(range(5, num - 5), 5))
    with FakeTeacher(latency=0.03) as server:
        command = [sys.executable, "-m", "privtune", "generate", "--model", str(tiny_model), "--seeds",
                   str(ROOT / "data" / "seeds.jsonl"), "--teacher-url", server.url, "--teacher-model", server.model,
                   "--num", str(num), "--concurrency", "2", "--workspace", str(workspace)]
        staged = lambda: list(workspace.glob(".staging/*/generated.jsonl"))
        accepted = lambda: sum(f.read_bytes().count(b"\n") for f in staged())
        for point in points:
            kill_when(command, lambda: accepted() >= point)
            assert finished(workspace, "dataset") == []
            for line in staged()[0].read_bytes().splitlines(keepends=True):
                assert line.endswith(b"\n") and json.loads(line)  # flushed whole lines only: none torn
        done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    [dataset] = finished(workspace, "dataset")
    rows = [json.loads(l) for l in (dataset / "generated.jsonl").read_text().splitlines()]
    assert len(rows) == num and len({r["instruction"] for r in rows}) == num
    split = sum(len((dataset / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "validation", "test"))
    assert split == num


def test_eval_killed_leaves_nothing_finished_and_reruns(tuned_model):
    artifact, workspace = tuned_model
    command = [sys.executable, "-m", "privtune", "eval", "--model", artifact.id, "--set", "limit=6",
               "--set", "max_new_tokens=16", "--workspace", str(workspace.root)]
    before = set(finished(workspace.root, "eval"))
    staged = lambda: list(workspace.root.glob(".staging/eval-*/metrics.json"))  # mid-run: first model scored
    kill_when(command, lambda: bool(staged()))
    assert set(finished(workspace.root, "eval")) == before
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [new] = set(finished(workspace.root, "eval")) - before
    assert json.loads((new / "manifest.json").read_text())["metrics"]["examples"] == 6


def _small_files(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past `limit` bytes fail: EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def test_full_disk_gives_a_clear_message_and_keeps_earlier_artifacts(tiny_model, tmp_path):
    workspace = tmp_path / "runs"
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n" for i in range(20)))
    prep = [sys.executable, "-m", "privtune", "prep", "--model", str(tiny_model), "--workspace", str(workspace)]
    assert subprocess.run([*prep, "--data", str(small)], capture_output=True, env=ENV).returncode == 0
    [earlier] = finished(workspace, "dataset")
    kept = snapshot(earlier)
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"prompt": f"question {i} " * 20, "completion": "a"}) + "\n" for i in range(3000)))
    # a new artifact on a nearly full disk, and one replacing the earlier on a full one
    for data, force, room in ((big, [], 64 * 1024), (small, ["--force"], 512)):
        result = subprocess.run([*prep, "--data", str(data), *force], capture_output=True, text=True, env=ENV,
                                preexec_fn=_small_files(room))
        output = result.stdout + result.stderr
        assert result.returncode == 2, output[-3000:]
        # the OS's reason, or SQLite's where its dedup file hit the limit first (SQLite does not pass errno on)
        assert "Traceback" not in output and "cannot write" in output, output[-3000:]
        assert "File too large" in output or "SQLITE_FULL" in output or "SQLITE_IOERR" in output, output[-3000:]
        assert finished(workspace, "dataset") == [earlier] and snapshot(earlier) == kept


def test_read_only_workspace_gives_a_clear_message(tiny_model, tmp_path, cli, monkeypatch):
    """Simulated (tests run as root, where file modes do not stop writes): every write under it fails EROFS."""
    workspace = tmp_path / "runs"
    records = ROOT / "tests" / "data" / "formats" / "alpaca.jsonl"
    assert cli("prep", "--data", records, "--model", tiny_model, "--workspace", workspace)[0] == 0
    [earlier] = finished(workspace, "dataset")
    kept = snapshot(earlier)

    def refuse(*paths):
        if any(str(p).startswith(str(workspace)) for p in paths):
            raise OSError(errno.EROFS, "Read-only file system", str(paths[0]))

    real_mkdir, real_open, real_rename, real_replace = Path.mkdir, open, os.rename, os.replace
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: refuse(self) or real_mkdir(self, *a, **k))
    monkeypatch.setattr("builtins.open", lambda f, mode="r", *a, **k: (
        refuse(f) if any(c in mode for c in "wax+") else None) or real_open(f, mode, *a, **k))
    monkeypatch.setattr(os, "rename", lambda a, b, **k: refuse(a, b) or real_rename(a, b, **k))
    monkeypatch.setattr(os, "replace", lambda a, b, **k: refuse(a, b) or real_replace(a, b, **k))
    for args in (["--data", ROOT / "tests" / "data" / "formats" / "dolly.jsonl"], ["--data", records, "--force"]):
        code, out = cli("prep", *args, "--model", tiny_model, "--workspace", workspace)
        assert code == 2 and "Read-only file system" in out and "Traceback" not in out, out
        assert str(workspace) in out.replace("\n", "")
    monkeypatch.undo()
    assert finished(workspace, "dataset") == [earlier] and snapshot(earlier) == kept


def test_full_disk_during_train_gives_a_clear_message_and_resumes(tickets_dataset, tiny_model, tmp_path, cli,
                                                                   monkeypatch):
    """The disk fills three times, as each writer reports it: torch.save (a checkpoint's optimizer.pt) and
    safetensors (the finished model) raise no OSError but RuntimeError / SafetensorError; a plain write
    (trainer_state.json) raises OSError ENOSPC. Each gives one message, and the re-run resumes."""
    import shutil

    import torch
    import transformers.modeling_utils
    from safetensors import SafetensorError

    workspace = tmp_path / "runs"
    shutil.copytree(tickets_dataset.path, workspace / tickets_dataset.path.name)  # a finished artifact to keep
    kept = snapshot(workspace / tickets_dataset.path.name)
    settings = {"max_length": 128, "batch_size": 8, "threads": 1, "max_steps": 12, "save_steps": 3,
                "eval_steps": 0, "logging_steps": 3}
    command = ["train", "--recipe", "full", "--data", tickets_dataset.id, "--model", tiny_model,
               "--workspace", workspace, *[f"--set={k}={v}" for k, v in settings.items()]]

    def torch_fills(obj, path, *args, **kwargs):
        if str(path).endswith("checkpoint-6/optimizer.pt"):
            Path(path).write_bytes(b"PK\x03\x04 partial")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(obj, path, *args, **kwargs)

    def open_fills(file, mode="r", *args, **kwargs):
        if str(file).endswith("checkpoint-9/trainer_state.json") and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    def safetensors_fills(tensors, filename, *args, **kwargs):
        if Path(filename).parent.name == "model":  # the finished model, after the last checkpoint
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_safe_save(tensors, filename, *args, **kwargs)

    real_save, real_open, real_safe_save = torch.save, open, transformers.modeling_utils.safe_save_file
    faults = [("torch.save", torch_fills, "file write failed", "checkpoint-3"),
              ("builtins.open", open_fills, "No space left on device", "checkpoint-6"),
              ("transformers.modeling_utils.safe_save_file", safetensors_fills, "No space left", "checkpoint-12")]
    resumed_from = None
    for name, fill, said, resumes in faults:
        monkeypatch.setattr(name, fill)
        code, out = cli(*command)
        monkeypatch.undo()
        out = out.replace("\n", " ")
        assert code == 2 and "Traceback" not in out and "cannot write" in out and said in out, out[-3000:]
        assert f"resumes from {resumes}" in out and "Finished artifacts are untouched" in out, out[-3000:]
        assert (f"resuming from {resumed_from}" in out) if resumed_from else ("resuming from" not in out)
        assert finished(workspace, "model") == [] and snapshot(workspace / tickets_dataset.path.name) == kept
        resumed_from = resumes
    code, out = cli(*command)
    assert code == 0 and f"resuming from {resumed_from}" in out, out[-3000:]
    [model] = finished(workspace, "model")
    metrics = json.loads((model / "manifest.json").read_text())["metrics"]
    assert metrics["steps"] == 12 and metrics["resumed_from_step"] == 12
    assert snapshot(workspace / tickets_dataset.path.name) == kept
    straight, _ = sft.run(str(tickets_dataset.path), str(tiny_model), train_config("full", **settings),
                          Workspace(tmp_path / "straight"))  # ends where an uninterrupted run ends
    assert metrics["eval_loss_end"] == straight.manifest["metrics"]["eval_loss_end"]
    losses = lambda path: [(r["step"], r.get("loss"), r.get("eval_loss")) for r in map(json.loads, path.open())
                           if "loss" in r or "eval_loss" in r]
    assert losses(model / "metrics.jsonl") == losses(straight.path / "metrics.jsonl")  # each step once
