"""Every command, each in its own guarded processes (and their children): nothing connects or looks
up a name off this machine, with the environment's privacy variables unset (privtune sets them)."""

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ROOT, smol_gguf_path
from tests.fake_judge import FakeJudge
from tests.fake_teacher import FakeTeacher, _free_port

GUARD = Path(__file__).parent / "egress_guard"
UNSET = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "WANDB_MODE", "DO_NOT_TRACK", "TRANSFORMERS_OFFLINE")


@pytest.mark.slow
@pytest.mark.real_model
def test_no_command_reaches_off_the_machine(tmp_path):
    log = tmp_path / "egress.log"
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(PYTHONPATH=os.pathsep.join([str(GUARD), str(ROOT)]), PRIVTUNE_EGRESS_LOG=str(log),
               PYTHONUNBUFFERED="1")
    runs = tmp_path / "runs"

    def privtune(*args, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "privtune", *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == code, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    last_id = lambda out: re.search(r"^(?:dataset|model|eval) (\w+) -> ", out, re.MULTILINE).group(1)
    records = tmp_path / "tickets.jsonl"
    records.write_text("\n".join((ROOT / "data" / "tickets.jsonl").read_text().splitlines()[:120]) + "\n")
    model = tmp_path / "base"
    privtune("base-model", "--out", model, "--text", records)
    dataset = last_id(privtune("prep", "--data", records, "--model", model, "--workspace", runs))
    tuned = last_id(privtune("train", "--data", dataset, "--model", model, "--recipe", "tiny-lora", "--report-to",
                             "wandb", "--set", "max_steps=2", "--set", "max_length=128", "--workspace", runs))
    with FakeTeacher() as teacher:
        privtune("generate", "--model", model, "--seeds", ROOT / "data" / "seeds.jsonl", "--teacher-url", teacher.url,
                 "--teacher-model", teacher.model, "--num", "20", "--workspace", runs)
    privtune("generate", "--model", model, "--seeds", ROOT / "data" / "seeds.jsonl", "--teacher-url",
             "https://api.example.com/v1", "--teacher-model", "m", "--workspace", runs, code=2)
    with FakeJudge() as judge:
        evaluation = last_id(privtune("eval", "--model", tuned, "--judge-url", judge.url, "--judge-model",
                                      judge.model, "--set", "limit=4", "--set", "max_new_tokens=8", "--workspace", runs))
    privtune("compare", evaluation, "--workspace", runs)
    privtune("import", smol_gguf_path(), "--workspace", runs)  # the real GGUF, converted with the hub variables unset
    privtune("runs", "--workspace", runs)
    privtune("show", tuned, "--workspace", runs)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "privtune", "serve", tuned, "--port", str(port), "--workspace",
                               str(runs)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        reply = client.chat.completions.create(model=tuned, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert reply.choices[0].message.role == "assistant"
    finally:
        server.terminate()
        server.wait(timeout=30)
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", attempts
    settings = [ast.literal_eval(line) for line in (tmp_path / "egress.log.env").read_text().splitlines()]
    # every command that exits normally reports its settings (serve is stopped by a signal)
    assert {s["argv"][0] for s in settings if s["argv"]} >= {"base-model", "prep", "train", "generate", "eval",
                                                              "compare", "import", "runs", "show"}
    assert all(s["HF_HUB_DISABLE_TELEMETRY"] == "1" and s["WANDB_MODE"] == "offline" and s["DO_NOT_TRACK"] == "1"
               for s in settings)


def test_the_guard_catches_what_it_should(tmp_path):
    """The guard itself: a remote connect and a name lookup are refused and logged; loopback is not."""
    log = tmp_path / "egress.log"
    env = {**os.environ, "PYTHONPATH": str(GUARD), "PRIVTUNE_EGRESS_LOG": str(log)}
    script = ("import socket\n"
              "for target in (lambda: socket.create_connection(('192.0.2.1', 443), timeout=1),\n"
              "               lambda: socket.getaddrinfo('huggingface.co', 443)):\n"
              "    try: target()\n"
              "    except OSError: pass\n"
              "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); socket.create_connection(s.getsockname())\n")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and "192.0.2.1" in lines[0] and "huggingface.co" in lines[1]
