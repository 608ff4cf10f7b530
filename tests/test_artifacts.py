"""A damaged manifest is reported by every command that meets it, and --force or `privtune gc` recovers."""

import pytest

from tests.conftest import FORMATS

DAMAGE = {
    "truncated JSON": '{"kind": "dataset", "id": ',
    "not UTF-8": b'{"kind": "\xff"}',
    "a list, not an object": "[1, 2]",
    "no id": '{"kind": "dataset"}',
}


@pytest.fixture()
def prepped(tiny_model, workspace, cli):
    args = ["prep", "--data", FORMATS / "alpaca.jsonl", "--model", tiny_model, "--workspace", workspace.root,
            "--set", "validation_fraction=0", "--set", "test_fraction=0"]
    code, out = cli(*args)
    assert code == 0, out
    (artifact,) = workspace.artifacts()
    return artifact, args


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_manifest_is_reported_and_force_rebuilds_it(damage, prepped, workspace, cli):
    artifact, args = prepped
    manifest = artifact.path / "manifest.json"
    manifest.write_bytes(damage if isinstance(damage, bytes) else damage.encode())

    code, out = cli("runs", "--workspace", workspace.root)
    assert code == 0 and f"damaged: dataset-{artifact.id}" in out and "privtune gc" in out, out
    code, out = cli("show", artifact.id, "--workspace", workspace.root)
    assert code == 2 and "damaged artifact" in out and str(manifest) in out.replace("\n", ""), out
    code, out = cli(*args)  # the same prep meets it: an error, not a silent reuse or replacement
    assert code == 2 and "damaged artifact" in out and "--force" in out and "Traceback" not in out, out
    assert manifest.read_bytes() == (damage if isinstance(damage, bytes) else damage.encode())

    code, out = cli(*args, "--force")
    assert code == 0, out
    (rebuilt,) = workspace.artifacts()
    assert rebuilt.id == artifact.id and rebuilt.manifest["status"] == "complete" and workspace.damaged() == []


def test_gc_removes_damaged_artifacts_and_leftovers_only(prepped, workspace, cli, tiny_model, tmp_path):
    artifact, _ = prepped
    records = tmp_path / "other.jsonl"
    records.write_text('{"prompt": "a", "completion": "b"}\n')
    code, out = cli("prep", "--data", records, "--model", tiny_model, "--workspace", workspace.root,
                    "--set", "validation_fraction=0", "--set", "test_fraction=0")
    assert code == 0, out
    (artifact.path / "manifest.json").write_text("{")
    trash = workspace.root / ".trash-dataset-x-1"
    interrupted = workspace.root / ".staging" / "model-abc"
    for folder in (trash, interrupted):
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"0" * 1024)

    code, out = cli("gc", "--dry-run", "--workspace", workspace.root)
    assert code == 0 and "would remove" in out and artifact.path.exists() and trash.exists(), out
    code, out = cli("gc", "--workspace", workspace.root)
    assert code == 0, out
    assert not artifact.path.exists() and not trash.exists() and interrupted.exists()  # resumable work stays
    assert len(workspace.artifacts()) == 1  # the healthy artifact is untouched
    code, out = cli("gc", "--staging", "--workspace", workspace.root)
    assert code == 0 and not interrupted.exists()
    code, out = cli("gc", "--workspace", workspace.root)
    assert code == 0 and "nothing to remove" in out
