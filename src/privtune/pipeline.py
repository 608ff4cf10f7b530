"""Where stages chain. A stage reads only artifacts; when the user hands one stage another's input
(a records file to `train`), the earlier stage runs here first, never inside the later one."""

from __future__ import annotations

import json
from pathlib import Path

from privtune.artifacts import Artifact, Workspace
from privtune.contract import DatasetArtifact, ModelArtifact
from privtune.errors import PrivtuneError
from privtune.ui import console


def dataset_for_training(data: str, model: str, workspace: Workspace) -> DatasetArtifact:
    """`--data` of train: a dataset artifact by id or path, or a records file prepped first with default
    settings (so an earlier `privtune prep` of the same file is found, not redone)."""
    artifact = workspace.resolve(data)
    if artifact is not None or not Path(data).is_file():
        return checked_dataset(artifact, data)
    from privtune.data import prep

    artifact, found = prep.run([Path(data)], model, prep.PrepConfig(), workspace)
    how = "found its identical prep" if found else "prepared it for the model first (privtune prep)"
    console.print(f"--data is a file: {how}: dataset {artifact.id}")
    return DatasetArtifact.of(artifact)


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
