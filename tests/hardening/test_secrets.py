"""A recognisable fake API key in the environment, used by generate, eval's judge and a wandb run:
afterwards it appears in no file under the workspace, the tracker's folders or the output."""

from pathlib import Path

from tests.conftest import ROOT
from tests.fake_judge import FakeJudge
from tests.fake_teacher import FakeTeacher

KEY = "sk-privtune-FAKE-KEY-5f0c2a9e71d34b88"
KEY_VARIABLES = ("PRIVTUNE_API_KEY", "OPENAI_API_KEY", "WANDB_API_KEY", "HF_TOKEN")


def files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]


def test_the_key_is_used_but_never_written(tiny_model, tuned_model, tmp_path, cli, monkeypatch):
    for variable in KEY_VARIABLES:
        monkeypatch.setenv(variable, KEY)
    monkeypatch.chdir(tmp_path)  # anything a library drops in the working directory is scanned too
    workspace, outputs = tmp_path / "runs", []
    common = ["--model", tiny_model, "--seeds", ROOT / "data" / "seeds.jsonl", "--workspace", workspace]
    with FakeTeacher() as teacher:
        code, out = cli("generate", *common, "--teacher-url", teacher.url, "--teacher-model", teacher.model,
                        "--num", "40")
        outputs.append(out)
        assert code == 0 and f"Bearer {KEY}" in teacher.auth_header_seen  # the key was really sent
        teacher.faults.append("echo_auth")
        code, out = cli("generate", *common, "--teacher-url", teacher.url, "--teacher-model", teacher.model,
                        "--num", "41")
        outputs.append(out)
        assert code == 2 and "***" in out  # the echoed request is shown with the key masked
    dataset = out_id(outputs[0], "dataset")
    code, out = cli("train", "--data", dataset, "--model", tiny_model, "--recipe", "tiny-lora", "--report-to", "wandb",
                    "--set", "max_steps=3", "--set", "max_length=128", "--workspace", workspace)
    outputs.append(out)
    assert code == 0, out
    assert list(workspace.glob("model-*/wandb")), "wandb wrote its offline run into the artifact"
    artifact, tuned_workspace = tuned_model
    with FakeJudge() as judge:
        code, out = cli("eval", "--model", artifact.id, "--judge-url", judge.url, "--judge-model", judge.model,
                        "--set", "limit=4", "--set", "max_new_tokens=16", "--workspace", tuned_workspace.root)
        outputs.append(out)
        assert code == 0 and f"Bearer {KEY}" in judge.auth_header_seen
    scanned = files_under(tmp_path, tuned_workspace.root, Path.home() / ".config" / "wandb",
                          Path.home() / ".cache" / "wandb", Path.home() / ".netrc")
    hits = [p for p in scanned if KEY.encode() in p.read_bytes()]
    print(f"\nsecrets scan: {len(scanned)} files, {len(hits)} hits")
    assert len(scanned) > 50 and hits == []
    assert not any(KEY in out for out in outputs)


def out_id(output: str, kind: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith(f"{kind} "))
