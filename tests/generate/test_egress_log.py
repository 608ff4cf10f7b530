"""What left the machine is counted exactly: every HTTP request (retries too) is logged before it is sent,
so the manifest's egress.requests equals what the teacher received, even after kill -9 and a resume."""

import json
import signal
import subprocess
import sys
import time

import pytest

from privtune.generate import stage
from tests.conftest import ROOT
from tests.fake_teacher import FakeTeacher
from tests.generate.test_generate import config, endpoint

SEEDS = ROOT / "data" / "seeds.jsonl"


@pytest.mark.parametrize("client", ["lean", "openai"])
def test_egress_counts_every_request_retries_included(client, tiny_model, workspace, monkeypatch):
    monkeypatch.setattr("privtune.lean_client._backoff", lambda attempt, headers: 0.01)
    with FakeTeacher() as teacher:
        teacher.faults.extend([500, 429, 503])  # each retried by the client: three requests the caller never sees
        artifact, _ = stage.run(endpoint(teacher, retries=3), str(tiny_model), config(num=20, client=client),
                                workspace, seeds=SEEDS)
    egress = artifact.manifest["egress"]
    answered = artifact.manifest["metrics"]["generation"]["requests"]  # cancelled ones still went out
    assert egress["requests"] == teacher.requests >= answered + 3
    log = [json.loads(line) for line in (artifact.path / egress["log"]).read_text().splitlines()]
    assert len(log) == teacher.requests and sum(line["bytes"] for line in log) == egress["bytes"] > 0
    assert set(log[0]) == {"time", "bytes"}  # when and how much, never what


def test_kill_9_then_resume_counts_exactly_what_the_teacher_received(tiny_model, tmp_path):
    workspace = tmp_path / "runs"
    with FakeTeacher() as teacher:
        command = [sys.executable, "-m", "privtune", "generate", "--model", str(tiny_model), "--seeds", str(SEEDS),
                   "--teacher-url", teacher.url, "--teacher-model", teacher.model, "--num", "60",
                   "--concurrency", "3", "--workspace", str(workspace)]
        teacher.faults.append(500)  # one retry before the kill
        teacher.hold = 6  # the 7th to 9th requests stay in flight: the run is killed with answers pending
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while teacher.requests < 9:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.time() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        before_resume = teacher.requests
        teacher.hold = None
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads(next(workspace.glob("dataset-*/manifest.json")).read_text())
    assert before_resume == 9 and teacher.requests > 9
    assert manifest["egress"]["requests"] == teacher.requests
    assert f"{before_resume} requests sent so far" in done.stderr
