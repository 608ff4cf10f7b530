"""GGUF in: the real SmolLM2 GGUF becomes a model artifact with the same logits as transformers' own
GGUF loading; the second use is free; unsupported files and files without a chat template get clear errors."""

from pathlib import Path

import numpy as np
import pytest

from privtune.artifacts import Workspace
from privtune.data.render import named_template
from privtune.errors import PrivtuneError
from privtune.models import gguf as gguf_module
from privtune.models.gguf import import_gguf
from privtune.models.loading import resolve_model

pytestmark = pytest.mark.real_model

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Classify the support ticket. Answer with JSON: category and priority.\n\n"
                                 "My order #1042 has not arrived. No rush."}],
]


def test_import_gives_transformers_gguf_logits(smol_gguf, smol_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, reference = gguf_module.load_gguf(smol_gguf)
    folder = smol_model.path / "model"
    imported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    saved_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert saved_tokenizer.chat_template == tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert saved_tokenizer.get_vocab() == tokenizer.get_vocab()
    worst = 0.0
    for messages in PROMPTS:
        text = saved_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = saved_tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        assert ids.tolist() == tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].tolist()
        with torch.no_grad():
            worst = max(worst, float((imported(ids).logits - reference(ids).logits).abs().max()))
    print(f"max abs logit difference, imported vs transformers GGUF loading: {worst:.3g}")
    assert worst == 0.0  # the same dequantized weights, the same network
    manifest = smol_model.manifest
    assert manifest["gguf"]["architecture"] == "llama" and manifest["gguf"]["tensor_types"]["Q4_1"] > 0
    assert manifest["chat_template_source"] == {"template": "gguf", "gguf_had_one": True}


def test_second_use_finds_the_artifact(smol_gguf, smol_model, real_workspace, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted the same GGUF again")

    monkeypatch.setattr(gguf_module, "convert", no_conversion)
    monkeypatch.setattr(gguf_module, "file_sha256", no_conversion)  # the unchanged file is not hashed again
    for ref in (str(smol_gguf), str(smol_gguf.parent)):  # the file, or the folder holding it
        model = resolve_model(ref, real_workspace)
        assert model.artifact.id == smol_model.id and Path(model.location) == (smol_model.path / "model").resolve()


def _write_gguf(path: Path, architecture: str, tensor_type: str = "F32") -> Path:
    """A minimal GGUF header with one tensor, enough for the checks that run before any weights load."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    qtype = gguf.GGMLQuantizationType[tensor_type]
    if tensor_type == "F32":
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    else:
        _, size = gguf.GGML_QUANT_SIZES[qtype]
        writer.add_tensor("token_embd.weight", np.zeros((1, 2 * size), dtype=np.uint8), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unsupported_architecture_is_named(tmp_path, workspace):
    path = _write_gguf(tmp_path / "model.gguf", "rwkv7")
    with pytest.raises(PrivtuneError) as error:
        import_gguf(path, workspace)
    assert "architecture 'rwkv7'" in str(error.value) and "llama" in str(error.value)
    assert not workspace.artifacts()


def test_unsupported_quantization_is_named(tmp_path, workspace):
    path = _write_gguf(tmp_path / "model.gguf", "llama", "Q8_K")
    with pytest.raises(PrivtuneError) as error:
        import_gguf(path, workspace)
    assert "Q8_K" in str(error.value) and "token_embd.weight" in str(error.value)


def test_gguf_without_chat_template_needs_one(smol_gguf, tmp_path, cli):
    """A base-model-like GGUF (the same file less its template): a clear message, then --template."""
    import gguf
    from gguf.scripts.gguf_new_metadata import copy_with_new_metadata

    bare = tmp_path / "bare.gguf"
    reader = gguf.GGUFReader(smol_gguf)
    writer = gguf.GGUFWriter(str(bare), "llama", endianess=reader.endianess)
    copy_with_new_metadata(reader, writer, {}, ["tokenizer.chat_template"])
    runs = tmp_path / "runs"
    code, output = cli("prep", "--data", Path(__file__).parents[2] / "data" / "tickets.jsonl", "--model", bare,
                       "--workspace", runs)
    assert code == 2 and "no chat template" in output and "--template" in output and "Traceback" not in output
    code, output = cli("import", bare, "--template", "chatml", "--workspace", runs)
    assert code == 0, output
    artifact = next(iter(Workspace(runs).artifacts()))
    assert artifact.manifest["chat_template_source"] == {"template": "chatml", "gguf_had_one": False}
    assert (artifact.path / "model" / "chat_template.jinja").read_text() == named_template("chatml")
    code, output = cli("prep", "--data", Path(__file__).parents[2] / "data" / "tickets.jsonl", "--model", bare,
                       "--workspace", runs)  # the imported artifact is found by the file's hash
    assert code == 0 and "converting" not in output, output


def test_an_ollama_blob_is_recognised_by_its_magic_and_a_missing_file_is_named(tmp_path, workspace):
    blob = _write_gguf(tmp_path / "sha256-0123abcd", "rwkv7")  # how Ollama stores models: no extension
    assert gguf_module.find_gguf(str(blob)) == blob.resolve()
    with pytest.raises(PrivtuneError, match="architecture 'rwkv7'"):
        resolve_model(str(blob), workspace)
    assert gguf_module.find_gguf(str(tmp_path / "notes.txt")) is None
    with pytest.raises(PrivtuneError, match="GGUF file does not exist"):
        resolve_model("models/missing.gguf", workspace)
