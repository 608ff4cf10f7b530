"""The wheel is the product: built from the checkout, installed into a fresh virtualenv, run from a
folder outside the checkout, it has its recipes and teacher prompts and runs generate, prep and train."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FORMATS, ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding privtune only from the wheel. Its dependencies come from the test venv
    through a path entry (installing torch and the rest again would take minutes): a plain path entry
    does not run the test venv's .pth files, so the checkout's editable install stays out of sight."""
    folder = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-w", str(folder / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (folder / "dist").glob("privtune-*.whl")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return venv


def test_wheel_holds_recipes_and_prompt_templates(installed):
    (wheel,) = (installed.parent / "dist").glob("privtune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("privtune/recipes/lora.yaml", "privtune/recipes/qlora.yaml", "privtune/recipes/accelerate/fsdp.yaml",
                 "privtune/templates/self_instruct.txt", "privtune/templates/docs_qa.txt",
                 "privtune/templates/chatml.jinja"):
        assert name in names, name


@pytest.mark.slow
def test_installed_wheel_runs_generate_prep_and_train_outside_the_checkout(installed, tiny_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PRIVTUNE_THREADS="1", PATH=f"{installed / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    work = tmp_path / "elsewhere"
    work.mkdir()
    records = work / "records.jsonl"
    shutil.copy(FORMATS / "alpaca.jsonl", records)
    shutil.copy(ROOT / "data" / "seeds.jsonl", work / "seeds.jsonl")

    def privtune(*args: str) -> str:
        done = subprocess.run([str(installed / "bin" / "privtune"), *map(str, args)], capture_output=True, text=True,
                              cwd=work, env=env, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr  # tables and progress go to stderr

    where = subprocess.run([installed / "bin" / "python", "-c", "import privtune; print(privtune.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout
    assert where.startswith(str(installed)), where  # the wheel's copy, not the checkout's
    assert "generate" in privtune("--help")
    assert "lora" in privtune("recipes")
    out = privtune("generate", "--seeds", "seeds.jsonl", "--teacher-url", "http://127.0.0.1:9/v1",
                   "--teacher-model", "t", "--model", tiny_model, "--dry-run", "--workspace", "runs")
    assert "come up with a set of 10 diverse task instructions" in out, out  # the packaged self_instruct.txt
    prep_out = privtune("prep", "--data", "records.jsonl", "--model", tiny_model, "--workspace", "runs",
                        "--set", "validation_fraction=0", "--set", "test_fraction=0")
    dataset = re.search(r"dataset (\w+) -> ", prep_out).group(1)
    train_out = privtune("train", "--recipe", "lora", "--data", dataset, "--model", tiny_model,
                         "--set", "max_steps=2", "--set", "batch_size=2", "--workspace", "runs")
    assert re.search(r"model \w+ -> ", train_out), train_out
    assert not (work / "recipes").exists()  # the recipe came from the package
