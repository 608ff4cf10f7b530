"""Load a model for inference: a model artifact (adapter on its base, or full weights) or a path."""

from __future__ import annotations

from dataclasses import dataclass

from privtune.artifacts import Workspace
from privtune.errors import PrivtuneError
from privtune.models.loading import load_tokenizer, resolve_model


@dataclass
class LoadedModel:
    name: str
    model: object
    tokenizer: object
    artifact_id: str | None


def load_for_inference(ref: str, workspace: Workspace) -> LoadedModel:
    """Merged weights if the artifact has them; else the adapter applied to its base model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    model_ref = resolve_model(ref, workspace)
    artifact = model_ref.artifact
    adapter = artifact is not None and artifact.manifest.get("adapter") and not (artifact.path / "merged").is_dir()
    base_location = artifact.manifest["base_model"] if adapter else model_ref.location
    try:
        auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(base_location).is_encoder_decoder \
            else AutoModelForCausalLM
        model = auto.from_pretrained(base_location, dtype=torch.float32)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(artifact.path / "model"))
    except (OSError, ValueError) as exc:
        raise PrivtuneError(f"cannot load model '{ref}': {str(exc).splitlines()[0]}", field="--model") from None
    model.eval()
    tokenizer = load_tokenizer(model_ref)
    return LoadedModel(artifact.id if artifact else ref, model, tokenizer, artifact.id if artifact else None)
