"""export on the real model: SmolLM2 LoRA-tuned and merged goes through llama.cpp's converter to F16 and
Q8_0; each file reads back with the model's vocabulary, template and eos, and transformers running it agrees
with the merged model; the Modelfile renders the chat template; vLLM's folder carries the stop ids."""

import pytest

from privtune.export import llamacpp, stage
from tests.export.ollama import fill, parse_modelfile

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def gguf_export(smol_tuned, real_workspace):
    artifact, found = stage.run(smol_tuned.id, stage.ExportConfig(quants=("f16", "q8_0")), real_workspace)
    assert not found
    return artifact


def test_gguf_files_read_back_and_agree(gguf_export, smol_tuned, smol_tickets):
    manifest = gguf_export.manifest
    assert manifest["parents"] == [smol_tuned.id] and manifest["stop_strings"] == ["<|im_end|>"]
    assert manifest["verification_prompts"].startswith(f"dataset {smol_tickets.id}, test split (8 prompts)")
    for quant in ("f16", "q8_0"):
        result = manifest["gguf"][quant]
        path = gguf_export.path / result["file"]
        assert path.stat().st_size == result["bytes"] > 100 * 2**20
        back = result["read_back"]
        assert back["tokens"] == back["vocab_size"] == 49152 and back["chat_template_match"] and back["eos_is_stop"]
        assert back["architecture"] == "llama" and back["name"] == manifest["name"]
        assert result["comparison"]["prompts"] == 8 and result["comparison"]["tokenizer_agrees"]
    f16, q8 = manifest["gguf"]["f16"]["comparison"], manifest["gguf"]["q8_0"]["comparison"]
    print(f"f16: {f16}\nq8_0: {q8}")
    assert f16["max_abs_logit_diff"] < 0.2 and f16["greedy_agreement"] >= 0.75
    assert f16["stopped_at_end_of_turn"] == f16["reference_stopped_at_end_of_turn"] > 0
    assert 0 < q8["max_abs_logit_diff"] < 5 and manifest["gguf"]["q8_0"]["bytes"] < 0.6 * manifest["gguf"]["f16"]["bytes"]
    readme = (gguf_export.path / "README.md").read_text()
    assert f"ollama create {manifest['name']} -f Modelfile" in readme and "llama-server -m" in readme
    assert f"{f16['max_abs_logit_diff']:.4f}" in readme and "without compiling" in readme


def test_modelfile_renders_the_chat_template(gguf_export):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_export.manifest["source"]["location"])
    parsed = parse_modelfile((gguf_export.path / "Modelfile").read_text())
    assert parsed["from"] == f"./{gguf_export.manifest['gguf']['f16']['file']}" and parsed["stop"] == ["<|im_end|>"]
    template = parsed["TEMPLATE"]
    assert "{{ .System }}" in template and "{{ .Prompt }}" in template and template.index("{{ .Response }}<|im_end|>")
    assert "SmolLM" in parsed["SYSTEM"]  # SmolLM2's template adds this system prompt when none is given
    user = [{"role": "user", "content": "Where is my order?"}]
    prompt_part = template.split("{{ .Response }}")[0]
    assert fill(prompt_part, parsed["SYSTEM"], "Where is my order?") == tokenizer.apply_chat_template(
        user, tokenize=False, add_generation_prompt=True)
    system = [{"role": "system", "content": "Answer in JSON."}, *user, {"role": "assistant", "content": "{}"}]
    assert fill(template, "Answer in JSON.", "Where is my order?", "{}") == tokenizer.apply_chat_template(
        system, tokenize=False)
    assert (gguf_export.path / "Modelfile.q8_0").read_text().startswith(
        f"FROM ./{gguf_export.manifest['gguf']['q8_0']['file']}")


def test_second_export_is_found(gguf_export, smol_tuned, real_workspace, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(llamacpp, "convert", no_conversion)
    artifact, found = stage.run(smol_tuned.id, stage.ExportConfig(quants=("f16,q8_0",)), real_workspace)
    assert found and artifact.id == gguf_export.id


def test_merged_folder_loads_with_stop_ids(smol_tuned, real_workspace, cli):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    code, output = cli("export", smol_tuned.id, "--to", "merged", "-w", real_workspace.root)
    assert code == 0, output
    merged = real_workspace.resolve(output.strip().splitlines()[-1].split()[1]).path / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert GenerationConfig.from_pretrained(merged).eos_token_id == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert "<|im_start|>" in tokenizer.chat_template
    assert AutoModelForCausalLM.from_pretrained(merged).config.vocab_size == 49152
