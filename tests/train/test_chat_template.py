"""The chat template a dataset was rendered with travels with the model it trains: model/, merged/,
the manifest, and so eval and serve prompt the model in the format it learned."""

import hashlib

import pytest

from privtune.data.render import named_template
from privtune.models.inference import load_for_inference
from privtune.train import stage as sft
from tests.conftest import ROOT, train_config

ALPACA_HI = "### Instruction:\nHi\n\n### Response:\n"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """load_for_inference sets torch's threads: keep this session's one thread (conftest) as it was."""
    monkeypatch.setenv("PRIVTUNE_THREADS", "1")


@pytest.fixture(scope="module")
def alpaca_model(tiny_model, tmp_path_factory):
    """The tickets prepped with `--template alpaca` (the tiny model's own is ChatML), trained 3 steps, merged."""
    from typer.testing import CliRunner

    from privtune.artifacts import Workspace
    from privtune.cli import app

    tmp = tmp_path_factory.mktemp("alpaca")
    records = tmp / "tickets.jsonl"
    records.write_text("\n".join((ROOT / "data" / "tickets.jsonl").read_text().splitlines()[:120]) + "\n")
    workspace = Workspace(tmp / "runs")
    result = CliRunner().invoke(app, ["prep", "--data", str(records), "--model", str(tiny_model), "--template",
                                      "alpaca", "--set", "max_length=128", "--workspace", str(workspace.root)])
    assert result.exit_code == 0, result.output
    dataset = workspace.artifacts()[0]
    artifact, found = sft.run(dataset.id, str(tiny_model), train_config("lora", max_steps=3), workspace,
                              sft.TrainOptions(merge=True))
    assert not found
    return artifact, workspace


def test_the_datasets_template_is_saved_with_model_and_merged(alpaca_model, tiny_model):
    from transformers import AutoTokenizer

    artifact, _ = alpaca_model
    alpaca = named_template("alpaca")
    assert AutoTokenizer.from_pretrained(tiny_model).chat_template != alpaca  # the base's is ChatML
    for folder in ("model", "merged"):
        tokenizer = AutoTokenizer.from_pretrained(artifact.path / folder)
        assert tokenizer.chat_template == alpaca, folder
    manifest = artifact.manifest
    assert manifest["chat_template_sha256"] == hashlib.sha256(alpaca.encode()).hexdigest()
    assert manifest["chat_template_source"] == {"dataset": manifest["parents"][0], "template": "alpaca",
                                                "differs_from_base": True}


def test_inference_eval_and_serve_prompt_in_the_trained_format(alpaca_model, monkeypatch):
    """load_for_inference (which eval and serve use) renders Alpaca, merged or adapter-on-base."""
    import shutil

    from privtune.eval.stage import EvalConfig, generate_answers

    artifact, workspace = alpaca_model
    loaded = load_for_inference(artifact.id, workspace)
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                                add_generation_prompt=True) == ALPACA_HI

    rendered = spy(monkeypatch, loaded.tokenizer, "apply_chat_template")
    generate_answers(loaded, [[{"role": "user", "content": "Hi"}]], EvalConfig(max_new_tokens=2, batch_size=1))
    assert ALPACA_HI in rendered  # the prompt eval generates from (it may render probes too)

    assert served_prompt(loaded, monkeypatch) == ALPACA_HI

    # without merged/, the adapter is applied to its base, and the tokenizer still comes from model/
    shutil.move(artifact.path / "merged", artifact.path.parent / "merged-aside")
    try:
        adapter = load_for_inference(artifact.id, workspace)
        assert type(adapter.model).__name__.startswith("Peft")
        assert served_prompt(adapter, monkeypatch) == ALPACA_HI
    finally:
        shutil.move(artifact.path.parent / "merged-aside", artifact.path / "merged")


def spy(monkeypatch, obj, name: str) -> list:
    """Record what obj.name returns, leaving its behaviour as it was."""
    seen, original = [], getattr(obj, name)

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(obj, name, recording)
    return seen


def served_prompt(loaded, monkeypatch) -> str:
    """The text the server hands the model for one chat request."""
    from fastapi.testclient import TestClient

    from privtune.serve import app as serve_app

    seen, original = [], serve_app.Generator.encode
    monkeypatch.setattr(serve_app.Generator, "encode", lambda self, text: (seen.append(text), original(self, text))[1])
    with TestClient(serve_app.create_app(loaded, "tuned")) as client:
        reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                           "max_tokens": 2})
    assert reply.status_code == 200, reply.text
    assert len(seen) == 1
    return seen[0]
