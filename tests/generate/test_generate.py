"""`privtune generate` against a real local HTTP server and the real openai client."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError
from privtune.generate import stage
from tests.conftest import ROOT
from tests.fake_teacher import FakeTeacher

SEEDS = ROOT / "data" / "seeds.jsonl"


@pytest.fixture()
def teacher():
    with FakeTeacher() as server:
        yield server


def endpoint(server, **kwargs):
    return Endpoint(server.url, server.model, timeout=kwargs.pop("timeout", 10), max_retries=kwargs.pop("retries", 3),
                    **kwargs)


def config(**kwargs):
    return stage.GenerateConfig(**{"num": 40, "concurrency": 4, **kwargs})


def lines(artifact):
    return [json.loads(l) for s in ("train", "validation", "test")
            for l in (artifact.path / f"{s}.jsonl").read_text().splitlines()]


def test_generates_exactly_n_and_a_trainable_dataset(teacher, tiny_model, workspace):
    artifact, found = stage.run(endpoint(teacher), str(tiny_model), config(num=200, concurrency=8), workspace,
                                seeds=SEEDS)
    rows = lines(artifact)
    assert not found and len(rows) == 200 == artifact.manifest["metrics"]["generated"]
    assert len({r["messages"][0]["content"] for r in rows}) == 200
    meta = rows[0]["meta"]
    assert meta["mode"] == "self_instruct" and meta["teacher_model"] == "teacher-1" and meta["request_id"]
    assert (artifact.path / "tokenized" / "train.parquet").is_file()
    egress = artifact.manifest["egress"]
    assert egress["host"] == "127.0.0.1" and not egress["remote"] and egress["requests"] >= 40
    again, found = stage.run(endpoint(teacher), str(tiny_model), config(num=200, concurrency=8), workspace,
                             seeds=SEEDS)
    assert found and again.path == artifact.path


def test_near_duplicates_and_filters_are_dropped(teacher, tiny_model, workspace):
    teacher.rng.seed(1)
    original = teacher.task_text
    calls = iter(range(10_000))
    teacher.task_text = lambda n: (original(n) if next(calls) % 2 else
                                   f"###\n{n}. Instruction: Draw a picture of the team.\n{n}. Input:\n<noinput>\n{n}. Output:\nNo.")
    artifact, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=20), workspace, seeds=SEEDS)
    dropped = artifact.manifest["metrics"]["generation"]["dropped"]
    assert dropped["blocklist"] > 0
    assert all("picture" not in r["messages"][0]["content"] for r in lines(artifact))


def test_faults_are_retried_skipped_or_counted(teacher, tiny_model, workspace):
    teacher.faults.extend([429, 500, 503, "malformed", "empty", "truncated", "timeout"])
    artifact, _ = stage.run(endpoint(teacher, timeout=1.5, retries=3), str(tiny_model), config(num=30, concurrency=2),
                            workspace, seeds=SEEDS)
    g = artifact.manifest["metrics"]["generation"]
    assert artifact.manifest["metrics"]["generated"] == 30
    assert g["malformed_responses"] == 2 and g["truncated_responses"] == 1
    assert teacher.requests >= g["requests"] + 4  # 429, 500, 503 and the timeout were retried by the client


def test_bad_key_stops_at_once(teacher, tiny_model, workspace):
    teacher.faults.extend([401] * 50)
    with pytest.raises(PrivtuneError) as info:
        stage.run(endpoint(teacher), str(tiny_model), config(), workspace, seeds=SEEDS)
    assert "refused" in str(info.value) and "401" in str(info.value)
    assert teacher.requests <= 8  # no retry storm: at most the requests already in flight


def test_unknown_model_stops_with_a_clear_message(teacher, tiny_model, workspace):
    wrong = Endpoint(teacher.url, "no-such-model", timeout=5)
    with pytest.raises(PrivtuneError) as info:
        stage.run(wrong, str(tiny_model), config(), workspace, seeds=SEEDS)
    assert "no model 'no-such-model'" in str(info.value)
    assert workspace.artifacts() == []


def test_remote_url_is_refused_before_any_socket(tiny_model, workspace, monkeypatch):
    opened = []
    real_connect = socket.socket.connect

    def spy(self, address):
        opened.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: opened.append(a) or [])
    remote = Endpoint("https://api.teacher.example.com/v1", "gpt-x")
    with pytest.raises(PrivtuneError) as info:
        stage.run(remote, str(tiny_model), config(), workspace, seeds=SEEDS)
    assert "--allow-remote" in str(info.value) and opened == []


def test_api_key_is_sent_but_never_written(teacher, tiny_model, workspace, monkeypatch):
    secret = "sk-test-privtune-SECRET-0123456789abcdef"
    monkeypatch.setenv("TEACHER_KEY", secret)
    artifact, _ = stage.run(endpoint(teacher, api_key_env="TEACHER_KEY"), str(tiny_model), config(num=10),
                            workspace, seeds=SEEDS)
    assert teacher.auth_header_seen[0] == f"Bearer {secret}"
    for path in workspace.root.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert artifact.manifest["teacher"]["api_key_env"] == "TEACHER_KEY"


def test_dry_run_sends_nothing(teacher, cli, tiny_model, workspace):
    code, out = cli("generate", "--model", tiny_model, "--seeds", SEEDS, "--teacher-url", teacher.url,
                    "--teacher-model", teacher.model, "--dry-run", "--redact", "--workspace", workspace.root)
    assert code == 0 and "Instruction:" in out and "nothing was sent" in out and "redaction: on" in out
    assert teacher.requests == 0


def test_killed_generate_resumes_to_exactly_n(tiny_model, tmp_path):
    with FakeTeacher(latency=0.05) as server:
        workspace = tmp_path / "runs"
        command = [sys.executable, "-m", "privtune", "generate", "--model", str(tiny_model), "--seeds", str(SEEDS),
                   "--teacher-url", server.url, "--teacher-model", server.model, "--num", "150",
                   "--concurrency", "2", "--workspace", str(workspace)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        accepted = lambda: sum(f.read_bytes().count(b"\n") for f in workspace.glob(".staging/*/generated.jsonl"))
        deadline = time.time() + 120
        while accepted() < 40 and time.time() < deadline:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not [p for p in workspace.iterdir() if p.name.startswith("dataset-")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "resuming:" in done.stderr
    finished = next(workspace.glob("dataset-*"))
    rows = [json.loads(l) for l in (finished / "generated.jsonl").read_text().splitlines()]
    assert len(rows) == 150 and len({r["instruction"] for r in rows}) == 150


def test_the_generated_dataset_takes_prep_settings(teacher, tiny_model, workspace):
    """The student's dataset is written with the `dataset` section: template, splits, length limit."""
    from privtune.contract import DatasetArtifact
    from privtune.data.dataset import DatasetSettings

    settings = DatasetSettings(template="alpaca", test_fraction=0.3, validation_fraction=0.0, max_length=256)
    artifact, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=20, dataset=settings), workspace,
                            seeds=SEEDS)
    dataset = DatasetArtifact.of(artifact)
    assert dataset.template_name == "alpaca" and "### Response" in dataset.chat_template
    assert dataset.split_size("validation") == 0 and 4 <= dataset.split_size("test") <= 10  # ~30% of 20, hashed
    assert dataset.config["dataset"]["max_length"] == 256 and dataset.config["seed"] == 42


def test_generated_examples_that_overlap_eval_data_are_dropped(teacher, tiny_model, workspace, tmp_path):
    """Decontamination is a dataset setting, so generate applies it too: the teacher, replaying the same tasks,
    writes a dataset without the examples that an eval file holds."""
    import random

    from privtune.data.dataset import DatasetSettings

    first, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=20, concurrency=1), workspace, seeds=SEEDS)
    train = [json.loads(l) for l in (first.path / "train.jsonl").read_text().splitlines()]
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text("".join(json.dumps({"messages": [{k: m[k] for k in ("role", "content")}
                                                            for m in row["messages"]]}) + "\n" for row in train[:3]))
    teacher.rng = random.Random(0)  # the same tasks again
    settings = DatasetSettings(decontaminate="drop", decontaminate_against=[str(evaluation)])
    second, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=20, concurrency=1, dataset=settings),
                          workspace, seeds=SEEDS)
    found = second.manifest["metrics"]["decontamination"]
    kept = {row["messages"][0]["content"] for row in lines(second)}
    assert found["dropped"] >= 3 and not kept & {row["messages"][0]["content"] for row in train[:3]}
    assert len(kept) == 20 - found["dropped"]
