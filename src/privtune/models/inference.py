"""Load a model for inference: a model artifact (adapter on its base, or full weights) or a path.

Eval and serve both come through here, so they share the device, dtype and thread choices of
privtune.runtime: the best device, the model's own dtype there (float32 on a CPU), one torch
thread per physical core (PRIVTUNE_THREADS overrides). The tokenizer, and with it the chat
template, comes from the artifact's own folder: the template the model was trained with.
Callers move their inputs to `model.device`.
"""

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
    device: str = "cpu"
    threads: int | None = None
    head: str = "lm"
    """lm: a language model; score: a reward model, whose output is one score per sequence."""


def load_for_inference(ref: str, workspace: Workspace, device: str | None = None) -> LoadedModel:
    """Merged weights if the artifact has them; else the adapter applied to its base model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    from privtune.runtime import apply_threads, best_device, compute_dtype, saved_dtype

    threads = apply_threads()
    device = device or best_device()
    model_ref = resolve_model(ref, workspace)
    artifact = model_ref.artifact
    adapter = artifact is not None and artifact.needs_base
    base_location = artifact.base_model if adapter else model_ref.location
    head = artifact.head if artifact is not None else "lm"
    try:
        config = AutoConfig.from_pretrained(base_location)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        extra = {"num_labels": 1} if head == "score" else {}
        model = (AutoModelForSequenceClassification if head == "score" else auto).from_pretrained(
            base_location, dtype=compute_dtype(saved_dtype(config), device), **extra,
            **({} if device == "cpu" else {"device_map": device}))
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(artifact.path / "model"))
    except (OSError, ValueError) as exc:
        raise PrivtuneError(f"cannot load model '{ref}': {str(exc).splitlines()[0]}", field="--model") from None
    model.eval()
    tokenizer = load_tokenizer(model_ref)
    if head == "score" and model.config.pad_token_id is None:  # the score is read at the last non-pad token
        model.config.pad_token_id = tokenizer.pad_token_id
    name = artifact.id if artifact else ref
    return LoadedModel(name, model, tokenizer, artifact.id if artifact else None, device, threads, head)
