"""`--merge`: the merged model keeps its base's dtype, and an existing adapter is merged in place
without retraining."""

import json

import pytest
import torch

from privtune.artifacts import Artifact
from privtune.errors import PrivtuneError
from privtune.train import stage as sft
from tests.conftest import train_config

FEW_STEPS = {"max_steps": 3, "learning_rate": 3e-3}


def safetensors_dtypes(folder) -> dict[str, str]:
    from safetensors import safe_open

    dtypes = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            dtypes.update({name: handle.get_slice(name).get_dtype() for name in handle.keys()})
    return dtypes


def weights_size(folder) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def test_merging_a_bf16_base_saves_bf16_at_half_the_size(tickets_dataset, tiny_model, tiny_bf16_model, workspace):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    artifact, _ = sft.run(str(tickets_dataset.path), str(tiny_bf16_model), train_config("lora", **FEW_STEPS), workspace,
                          sft.TrainOptions(merge=True))
    merged = artifact.path / "merged"
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"
    assert set(safetensors_dtypes(merged).values()) == {"BF16"}
    assert 0.45 < weights_size(merged) / weights_size(tiny_model) < 0.55  # tiny_model is the fp32 original

    # merged in float32 and rounded once: exactly the fp32 merge cast to bf16, and not the base unchanged
    base = AutoModelForCausalLM.from_pretrained(tiny_bf16_model, dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, artifact.path / "model").merge_and_unload().state_dict()
    saved = {k: v for path in merged.glob("*.safetensors") for k, v in load_file(path).items()}
    original = {k: v for path in tiny_bf16_model.glob("*.safetensors") for k, v in load_file(path).items()}
    assert all(torch.equal(saved[name], reference[name].to(torch.bfloat16)) for name in saved)
    assert any(not torch.equal(saved[name], original[name]) for name in saved)


def train_args(tickets_dataset, tiny_model, workspace) -> list:
    settings = {"max_length": 128, "logging_steps": 1, "eval_steps": 0, "save_steps": 1000, "batch_size": 8,
                "threads": 1, **FEW_STEPS}
    return ["train", "--recipe", "lora", "--data", tickets_dataset.path, "--model", tiny_model,
            "--workspace", workspace.root, *[f"--set={k}={v}" for k, v in settings.items()]]


def no_training(monkeypatch):
    """Anything on the training path now fails the test."""
    def retrained(*args, **kwargs):
        raise AssertionError("trained again")

    for name in ("load_model", "trainer_arguments", "_finish"):
        monkeypatch.setattr(sft, name, retrained)


def test_merge_on_an_existing_adapter_merges_in_place_without_retraining(tickets_dataset, tiny_model, workspace,
                                                                          cli, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, out = cli(*train_args(tickets_dataset, tiny_model, workspace))
    assert code == 0, out
    artifact = workspace.artifacts()[0]
    assert not (artifact.path / "merged").exists() and artifact.manifest["merged"] is False
    metrics_before = (artifact.path / "metrics.jsonl").read_bytes()
    (artifact.path / ".merged-tmp-999999999").mkdir()  # left by a merge that was killed

    no_training(monkeypatch)
    code, out = cli(*train_args(tickets_dataset, tiny_model, workspace), "--merge")
    assert code == 0, out
    assert "merged the adapter of the existing model in place, without retraining" in out
    reloaded = Artifact.load(artifact.path)
    assert reloaded.manifest["merged"] is True
    assert {k: v for k, v in reloaded.manifest.items() if k != "merged"} == \
        {k: v for k, v in artifact.manifest.items() if k != "merged"}
    assert (artifact.path / "metrics.jsonl").read_bytes() == metrics_before
    assert sorted(p.name for p in artifact.path.iterdir() if p.name.startswith(".")) == []

    tokenizer = AutoTokenizer.from_pretrained(artifact.path / "merged")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "My order has not arrived."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    base_logits = base(**prompt).logits
    adapter = PeftModel.from_pretrained(base, artifact.path / "model").eval()
    merged = AutoModelForCausalLM.from_pretrained(artifact.path / "merged").eval()
    with torch.no_grad():
        adapter_logits, merged_logits = adapter(**prompt).logits, merged(**prompt).logits
        greedy = [m.generate(**prompt, max_new_tokens=20, do_sample=False) for m in (adapter, merged)]
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-3)  # the adapter changed something
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(greedy[0], greedy[1])

    code, out = cli(*train_args(tickets_dataset, tiny_model, workspace), "--merge")
    assert code == 0 and "merged/ is there already" in out


def test_merge_with_prompt_tuning_is_refused_before_training(tickets_dataset, tiny_model, workspace, monkeypatch):
    no_training(monkeypatch)
    with pytest.raises(PrivtuneError) as info:
        sft.run(str(tickets_dataset.path), str(tiny_model), train_config("prompt-tuning"), workspace,
                sft.TrainOptions(merge=True))
    assert info.value.field == "--merge"
