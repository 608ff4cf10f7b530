"""`privtune train`: each recipe learns, outputs reload, bad setups fail clearly."""

import json

import pytest
import torch

from privtune.errors import PrivtuneError
from privtune.train import stage as sft
from tests.conftest import train_config


def metrics(artifact):
    return artifact.manifest["metrics"]


def test_lora_learns_saves_adapter_and_merges(tickets_dataset, tiny_model, workspace):
    # The tiny base is random-init, so its output head is trained beside the adapters (README).
    config = train_config("lora", epochs=4, learning_rate=3e-3, **{"lora.modules_to_save": "lm_head"})
    artifact, found = sft.run(str(tickets_dataset.path), str(tiny_model), config, workspace,
                              sft.TrainOptions(merge=True))
    m = metrics(artifact)
    assert not found and m["eval_loss_end"] < 0.5 * m["eval_loss_start"], m
    assert (artifact.path / "model" / "adapter_model.safetensors").is_file()
    assert (artifact.path / "loss_curve.png").stat().st_size > 1000
    assert not (artifact.path / "checkpoints").exists()
    logged = [json.loads(l) for l in (artifact.path / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in l for l in logged) and any("eval_loss" in l for l in logged)
    assert artifact.manifest["parents"] == [tickets_dataset.id]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(artifact.path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(artifact.path / "merged")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = merged.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]

    again, found = sft.run(str(tickets_dataset.path), str(tiny_model), config, workspace)
    assert found and again.path == artifact.path


def test_full_fine_tune_learns_to_stop(tickets_dataset, tiny_model, workspace):
    """Greedy generation ends on the end-of-turn token: it was inside the trained span."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = train_config("full", epochs=5, learning_rate=2e-3)
    artifact, _ = sft.run(str(tickets_dataset.path), str(tiny_model), config, workspace)
    assert metrics(artifact)["eval_loss_end"] < 0.5
    model = AutoModelForCausalLM.from_pretrained(artifact.path / "model")
    tokenizer = AutoTokenizer.from_pretrained(artifact.path / "model")
    test_rows = [json.loads(l) for l in (tickets_dataset.path / "test.jsonl").read_text().splitlines()]
    stopped = 0
    for row in test_rows[:8]:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        out = model.generate(**prompt, max_new_tokens=60, do_sample=False)[0][prompt["input_ids"].shape[1]:]
        stopped += int(out[-1] == tokenizer.eos_token_id and len(out) < 60)
    assert stopped == min(8, len(test_rows))


def test_prompt_tuning_lowers_validation_loss(tickets_dataset, tiny_model, workspace):
    config = train_config("prompt-tuning", epochs=2, learning_rate=3e-2)
    artifact, _ = sft.run(str(tickets_dataset.path), str(tiny_model), config, workspace)
    m = metrics(artifact)
    assert m["eval_loss_end"] < m["eval_loss_start"] - 0.2, m
    assert json.loads((artifact.path / "model" / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"


def test_qlora_runs_on_cpu_with_a_4bit_base(tickets_dataset, tiny_model, workspace):
    config = train_config("qlora", max_steps=6, learning_rate=3e-3, gradient_checkpointing=False)
    artifact, _ = sft.run(str(tickets_dataset.path), str(tiny_model), config, workspace)
    m = metrics(artifact)
    assert m["steps"] == 6 and m["eval_loss_end"] < m["eval_loss_start"]
    assert (artifact.path / "model" / "adapter_model.safetensors").is_file()


def test_seq2seq_t5_trains_with_lora(tiny_t5, workspace, tmp_path):
    from privtune.data import prep
    from tests.conftest import ROOT

    records = tmp_path / "t.jsonl"
    records.write_text("\n".join((ROOT / "data" / "tickets.jsonl").read_text().splitlines()[:120]) + "\n")
    dataset, _ = prep.run([records], str(tiny_t5), prep.PrepConfig(max_length=128), workspace)
    config = train_config("lora", epochs=2, learning_rate=3e-3, batch_size=8)
    artifact, _ = sft.run(dataset.id, str(tiny_t5), config, workspace)
    m = metrics(artifact)
    assert artifact.manifest["seq2seq"] and m["eval_loss_end"] < m["eval_loss_start"], m
    assert json.loads((artifact.path / "model" / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    from privtune.models.tiny import TinyModelConfig, build_tiny_model
    from tests.conftest import ROOT

    return build_tiny_model(tmp_path_factory.mktemp("t5") / "tiny-t5", [ROOT / "data" / "tickets.jsonl"],
                            TinyModelConfig(architecture="t5"))


def test_missing_target_modules_are_named(tickets_dataset, tiny_model, workspace):
    config = train_config("lora", **{"lora.target_modules": "query_key_value"})
    with pytest.raises(PrivtuneError) as info:
        sft.run(str(tickets_dataset.path), str(tiny_model), config, workspace)
    assert info.value.field == "lora.target_modules" and "q_proj" in info.value.hint
    assert workspace.artifacts() == []


def test_dataset_from_another_tokenizer_is_refused(tickets_dataset, tmp_path, workspace):
    from privtune.models.tiny import TinyModelConfig, build_tiny_model
    from tests.conftest import FORMATS

    other = build_tiny_model(tmp_path / "other", [FORMATS / "openai.jsonl"], TinyModelConfig(vocab_size=300))
    with pytest.raises(PrivtuneError) as info:
        sft.run(str(tickets_dataset.path), str(other), train_config(), workspace)
    assert "tokenized for another model" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU rule")
@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_precision_is_fp32_and_bf16_autocast_only_where_native(native_bf16, monkeypatch):
    from privtune import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: native_bf16)
    flags = sft.precision_flags(train_config(precision="auto"))
    assert not flags["bf16"] and not flags["fp16"] and flags["_dtype"] == "fp32"
    refused = ["fp16"] + ([] if native_bf16 else ["bf16"])
    for precision in refused:
        with pytest.raises(PrivtuneError) as info:
            sft.precision_flags(train_config(precision=precision))
        assert info.value.field == "precision" and "needs a GPU" in str(info.value)
    if native_bf16:  # asked for: autocast, the weights stay fp32
        flags = sft.precision_flags(train_config(precision="bf16"))
        assert flags["bf16"] and flags["_dtype"] == "fp32"


def test_cli_train_bad_recipe_value_and_missing_model(tickets_dataset, tiny_model, workspace, cli):
    code, out = cli("train", "--data", tickets_dataset.path, "--model", tiny_model, "--set", "learning_rate=-1",
                    "--workspace", workspace.root)
    assert code == 2 and "learning_rate" in out and "must be positive" in out and "Traceback" not in out
    code, out = cli("train", "--data", tickets_dataset.path, "--model", "./nowhere", "--workspace", workspace.root)
    assert code == 2 and "model path does not exist" in out


def test_the_last_step_is_evaluated_once(tickets_dataset, tiny_model, workspace, monkeypatch):
    """transformers evaluates at the last step when evaluating every N steps; privtune reuses that loss
    instead of a second pass over the validation split."""
    from transformers import Trainer

    calls = []
    evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: calls.append(self.state.global_step)
                        or evaluate(self, *a, **k))
    config = train_config("lora", max_steps=4, eval_steps=2)
    artifact, _ = sft.run(str(tickets_dataset.path), str(tiny_model), config, workspace)
    assert calls == [0, 2, 4]
    logged = [json.loads(l) for l in (artifact.path / "metrics.jsonl").read_text().splitlines()]
    assert metrics(artifact)["eval_loss_end"] == [l for l in logged if "eval_loss" in l][-1]["eval_loss"]
