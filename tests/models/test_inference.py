"""load_for_inference: device, dtype and threads chosen as privtune.runtime says."""

import pytest
import torch

from privtune import runtime
from privtune.models.inference import load_for_inference


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_bf16_model_is_computed_in_float32_on_cpu(tiny_bf16_model, workspace, restore_threads, monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "1")
    loaded = load_for_inference(str(tiny_bf16_model), workspace, device="cpu")
    assert loaded.device == "cpu" and loaded.model.device.type == "cpu"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}


def test_threads_follow_the_env_variable_then_physical_cores(tiny_model, workspace, monkeypatch, restore_threads):
    torch.set_num_threads(2)
    monkeypatch.setenv(runtime.THREADS_ENV, "1")
    assert load_for_inference(str(tiny_model), workspace).threads == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv(runtime.THREADS_ENV)
    monkeypatch.setattr(runtime, "physical_cores", lambda: 3)
    monkeypatch.setattr(runtime, "cpu_quota", lambda: None)
    assert load_for_inference(str(tiny_model), workspace).threads == 3 and torch.get_num_threads() == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_model_keeps_its_dtype_and_generates(tiny_bf16_model, workspace, restore_threads):
    loaded = load_for_inference(str(tiny_bf16_model), workspace)
    assert loaded.device == "cuda" and loaded.model.device.type == "cuda"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    inputs = loaded.tokenizer("Hello", return_tensors="pt").to(loaded.model.device)
    out = loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
