"""Where stages chain. A stage reads only artifacts; when the user hands one stage another's input
(a records file to `train`), the earlier stage runs here first, never inside the later one."""

from __future__ import annotations

from pathlib import Path

from privtune.artifacts import Workspace
from privtune.contract import DatasetArtifact, checked_dataset
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
