"""What each kind of artifact promises the stages that read it: typed, read-only views of manifests.

A stage writes its manifest as a dict (privtune.artifacts); every stage that reads another's artifact
reads it through one of these views, so what a dataset promises a trainer (tokenizer fingerprint,
chat template, splits, kind of examples) or a model promises eval, serve and export (base model,
method, adapter or merged weights, lineage) is written down here once. A manifest that lacks a
promised field is a damaged artifact, named as such, not a KeyError deep inside a stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from privtune.artifacts import MANIFEST, Artifact, DamagedArtifact, Workspace
from privtune.errors import PrivtuneError

V = TypeVar("V", bound="View")


class View(BaseModel):
    """Fields every artifact has; subclasses add their kind's. Extra manifest keys are kept, unread."""

    model_config = ConfigDict(extra="allow", frozen=True)
    KIND: ClassVar[str] = ""

    id: str
    kind: str
    path: Path
    parents: list[str] = []
    created: str = ""
    metrics: dict = {}
    config: dict = {}

    @classmethod
    def of(cls: type[V], artifact: Artifact, field: str | None = None) -> V:
        """The view of `artifact`; a different kind is the user's error, a missing field a damaged artifact."""
        if artifact.kind != cls.KIND:
            raise PrivtuneError(f"'{artifact.id}' is a {artifact.kind} artifact, not a {cls.KIND}", field=field)
        try:
            return cls.model_validate({**artifact.manifest, "path": artifact.path})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise DamagedArtifact(f"field '{where}': {first['msg'].lower()}", str(artifact.path / MANIFEST)) from None

    @property
    def manifest(self) -> dict:
        """The manifest as written (for `show` and reports that print it whole)."""
        return self.model_dump(exclude={"path"})


class DatasetArtifact(View):
    """Tokenized examples for one tokenizer and chat template, split train/validation/test (prep, generate)."""

    KIND: ClassVar[str] = "dataset"
    model: str
    """The model whose tokenizer wrote the token ids."""
    tokenizer_fingerprint: str
    """Tokenizer + chat template hash: a trainer refuses a dataset made for another."""
    examples: str = "sft"
    """What each example holds: sft = a conversation with trained-token masks (assistant_masks)."""
    formats: dict[str, str] = {}
    """Input file -> the record format it was read as (prep)."""

    @property
    def chat_template(self) -> str:
        """The template the examples were rendered with; the trained model keeps it."""
        return (self.path / "chat_template.jinja").read_text(encoding="utf-8")

    @property
    def template_name(self) -> str | None:
        return self.config.get("template") or (self.config.get("dataset") or {}).get("template")

    def split_size(self, split: str) -> int:
        return int(self.metrics.get("splits", {}).get(split, 0))


class ModelArtifact(View):
    """A trained (or imported) model: an adapter over `base_model`, or full weights; merged/ when merged."""

    KIND: ClassVar[str] = "model"
    method: str
    base_model: str | None = None
    adapter: bool = False
    merged: bool = False
    seq2seq: bool = False
    head: str = "lm"
    """lm: a language model; score: a reward model's one-output score head (AutoModelForSequenceClassification)."""
    name: str | None = None
    """A display name (an imported GGUF's file name)."""
    gguf: dict = {}
    """For a model imported from a GGUF file: its hash and stamp."""

    @property
    def weights(self) -> Path:
        """What `from_pretrained` loads: merged/ when there, else model/ (full weights or the adapter)."""
        return self.path / ("merged" if (self.path / "merged").is_dir() else "model")

    @property
    def needs_base(self) -> bool:
        """An adapter without merged weights: load `base_model`, then the adapter."""
        return self.adapter and not (self.path / "merged").is_dir()


class EvalArtifact(View):
    """Scores of a model (and its baseline) on held-out examples, with intervals and paired tests."""

    KIND: ClassVar[str] = "eval"
    model: str
    baseline: str | None = None
    dataset: str
    notes: list[str] = []


class ExportArtifact(View):
    """A model converted for another runtime: GGUF files (+ Modelfile) or merged safetensors."""

    KIND: ClassVar[str] = "export"
    to: str
    name: str
    stop_token_ids: list[int] = []
    verification_prompts: str = ""
    gguf: dict = {}
    ollama: dict = {}


# How a stage finds the artifacts it reads: by id, path or lineage, always as a view.

def dataset_artifact(data: str, workspace: Workspace) -> DatasetArtifact:
    """A dataset artifact by id, id prefix or path; anything else is a clear error."""
    return checked_dataset(workspace.resolve(data), data)


def checked_dataset(artifact: Artifact | None, data: str) -> DatasetArtifact:
    """`artifact` (what `data` resolved to) if it is a dataset; else the error that says what it is."""
    if artifact is None:
        raise PrivtuneError(f"no dataset artifact or file '{data}'", field="--data",
                            hint="pass a dataset id from `privtune runs`, or a records file")
    if artifact.kind != "dataset":
        raise PrivtuneError(f"'{data}' is a {artifact.kind} artifact, not a dataset", field="--data")
    return DatasetArtifact.of(artifact)


def find_dataset(trained: ModelArtifact | None, data: str | None, workspace: Workspace) -> DatasetArtifact:
    """--data, or the dataset the model was trained on (its lineage)."""
    if data:
        artifact = workspace.resolve(data)
        if artifact is None or artifact.kind != "dataset":
            raise PrivtuneError(f"no dataset artifact '{data}'", field="--data", hint="privtune runs lists them")
        return DatasetArtifact.of(artifact)
    parents = trained.parents if trained else []
    for parent in parents:  # ids: a direct lookup, not a scan of the workspace
        artifact = workspace.get("dataset", parent)
        if artifact is not None:
            return DatasetArtifact.of(artifact)
    raise PrivtuneError("no --data given and the model has no dataset in its lineage", field="--data")


def split_rows(dataset: DatasetArtifact, limit: int) -> tuple[str, list[dict], list]:
    """The test split (validation if test is empty) as schema rows and tokenized rows: the held-out
    examples eval scores and export verifies on."""
    import pyarrow.parquet as pq

    for split in ("test", "validation"):
        rows = [json.loads(l) for l in (dataset.path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        if rows:
            tokenized = pq.read_table(dataset.path / "tokenized" / f"{split}.parquet").to_pylist()
            cut = limit or len(rows)
            return split, rows[:cut], tokenized[:cut]
    raise PrivtuneError(f"dataset {dataset.id} has no test or validation examples", field="--data")
