"""Find a model by artifact id, local path or hub id, and load it with `from_pretrained`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from privtune.artifacts import Workspace
from privtune.contract import ModelArtifact
from privtune.errors import PrivtuneError


@dataclass
class ModelRef:
    """Where a model comes from: `location` is what `from_pretrained` gets."""

    location: str
    artifact: ModelArtifact | None = None

    @property
    def lineage_id(self) -> str:
        return self.artifact.id if self.artifact else self.location


def resolve_model(ref: str, workspace: Workspace) -> ModelRef:
    """A model artifact (its weights folder), a GGUF file (converted once into an artifact), a local
    directory, or a hub id `org/name`."""
    artifact = workspace.resolve(ref)
    if artifact is None:
        from privtune.models.gguf import find_gguf, resolve_gguf

        gguf = find_gguf(ref)
        artifact = resolve_gguf(gguf, workspace) if gguf else None
    if artifact is not None:
        if artifact.kind != "model":
            raise PrivtuneError(f"'{ref}' is a {artifact.kind} artifact, not a model", field="--model")
        view = ModelArtifact.of(artifact, field="--model")
        return ModelRef(str(view.weights.resolve()), view)
    path = Path(ref)
    if path.exists():
        if not (path / "config.json").is_file():
            raise PrivtuneError("not a model directory (no config.json) nor a GGUF file", source=str(path),
                                field="--model")
        return ModelRef(str(path.resolve()))
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        return ModelRef(ref)  # a hub id; from_pretrained finds it in the local cache or downloads it
    raise PrivtuneError(f"model path does not exist: {ref}", field="--model",
                        hint="pass a model directory, a model artifact id (privtune runs), or a hub id org/name")


def load_tokenizer(model: ModelRef):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model.location)
    except (OSError, ValueError) as exc:
        raise PrivtuneError(f"cannot load the tokenizer of '{model.location}': {str(exc).splitlines()[0]}",
                            field="--model", hint="check the path, or that the hub is reachable for a hub id") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
