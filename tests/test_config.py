"""Recipes load into typed configs; every mistake names the file, line and key."""

from pathlib import Path

import pytest

from privtune.config import build_config, field_docs, list_recipes, load_recipe
from privtune.errors import PrivtuneError
from privtune.train.config import METHODS, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "src" / "privtune" / "recipes").glob("*.yaml")) + sorted((ROOT / "recipes").glob("*.yaml"))


def test_recipes_ship():
    assert {p.stem for p in SHIPPED} >= {"full", "lora", "qlora", "prompt-tuning"}


@pytest.mark.parametrize("recipe", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_recipe_parses(recipe):
    config, path = load_recipe(TrainConfig, str(recipe))
    assert path == recipe and (config.method == recipe.stem or recipe.stem not in METHODS)


def test_recipe_by_name_and_override():
    config, _ = load_recipe(TrainConfig, "lora", ["lora.r=4", "learning_rate=1e-3", "lora.target_modules=q_proj,v_proj"])
    assert config.lora.r == 4 and config.learning_rate == 0.001
    assert config.lora.target_modules == ["q_proj", "v_proj"]


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, line, key, words", [
    ("method: lora\nlearning_rat: 1.0e-4\n", 2, "learning_rat", "unknown key"),
    ("method: lora\nlora:\n  rank: 4\n", 3, "lora.rank", "unknown key"),
    ("method: lora\nbatch_size: eight\n", 2, "batch_size", "expected int"),
    ("method: lora\nlearning_rate: -0.001\n", 2, "learning_rate", "must be positive"),
    ("method: sparse\n", 1, "method", "expected one of"),
    ("method: lora\ngradient_checkpointing: 3\n", 2, "gradient_checkpointing", "expected bool"),
    ("method: lora\nlora:\n  r: 0\n", 3, "lora.r", "at least 1"),
])
def test_bad_recipe_names_file_line_and_key(tmp_path, text, line, key, words):
    path = write(tmp_path, text)
    with pytest.raises(PrivtuneError) as info:
        load_recipe(TrainConfig, path)
    message = str(info.value)
    assert f"{path}:{line}" in message and f"field '{key}'" in message and words in message


def test_bad_override_names_the_flag(tmp_path):
    with pytest.raises(PrivtuneError) as info:
        load_recipe(TrainConfig, "lora", ["epochs=-1"])
    assert "--set" in str(info.value) and "epochs" in str(info.value)


def test_invalid_yaml_and_unknown_recipe(tmp_path):
    with pytest.raises(PrivtuneError) as info:
        load_recipe(TrainConfig, write(tmp_path, "method: lora\n  bad: [\n"))
    assert "invalid YAML" in str(info.value)
    with pytest.raises(PrivtuneError) as info:
        load_recipe(TrainConfig, "no-such-recipe")
    assert "lora" in str(info.value)  # lists the known recipes


def test_build_config_rejects_silent_defaults():
    with pytest.raises(PrivtuneError):
        build_config(TrainConfig, {"epoch": 3}, source="x")


def test_recipes_lists_and_shows_the_shipped_ones_from_any_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./recipes here: only what the package ships
    assert {"full", "lora", "qlora", "prompt-tuning", "tiny-lora", "accelerate/fsdp"} <= set(list_recipes())
    code, out = cli("recipes")
    assert code == 0 and "lora" in out and "shipped" in out and "demo-lora" not in out, out
    code, out = cli("recipes", "show", "lora")
    assert code == 0 and out == (ROOT / "src" / "privtune" / "recipes" / "lora.yaml").read_text()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "lora.yaml").write_text("# my own lora\nmethod: lora\nepochs: 1\n")
    config, path = load_recipe(TrainConfig, "lora")  # the project's ./recipes shadows the shipped one
    assert config.epochs == 1 and path == Path("recipes") / "lora.yaml"
    code, out = cli("recipes", "show", "nope")
    assert code == 2 and "no recipe named 'nope'" in out


def test_validate_reports_every_problem_at_once_with_its_line(cli, tmp_path):
    path = write(tmp_path, "method: lora\nepochz: 2\nlearning_rate: .nan\nlora:\n  r: zero\nbatch_size: 4\n")
    code, out = cli("validate", path)
    flat = " ".join(out.split())
    assert code == 2 and "3 problems" in flat, out
    for line, key, words in ((2, "epochz", "unknown key"), (3, "learning_rate", "expected a finite number"), (5, "lora.r", "expected int")):
        assert f"{path}:{line}: field '{key}': {words}" in flat, (key, out)
    code, out = cli("validate", "lora", "--set", "epochs=1", "--set", "lora.r=4")
    assert code == 0 and "valid lora recipe" in out and "epochs: 1.0" in out and "  r: 4" in out, out


def test_every_recipe_key_is_documented_and_listed(cli):
    docs = field_docs(TrainConfig)
    assert {"learning_rate", "lora.r", "prompt_tuning.num_virtual_tokens"} <= set(docs)
    assert [key for key, (_, _, doc) in docs.items() if not doc] == []
    code, out = cli("validate", "--keys")
    assert code == 0 and "lora.r = 16  (int)\n    Rank of the low-rank update." in out
    assert "[embed_tokens, lm_head]" in out and out.count(" = ") >= len(docs)
