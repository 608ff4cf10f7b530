"""A 404 from the teacher says what is wrong: the URL's path (no /v1, or the full .../chat/completions) or
the model name, with the models the server lists (asked once, and counted as egress)."""

import pytest

from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError
from privtune.generate import stage
from tests.conftest import ROOT
from tests.fake_teacher import FakeTeacher
from tests.generate.test_generate import config

SEEDS = ROOT / "data" / "seeds.jsonl"


@pytest.fixture()
def teacher():
    with FakeTeacher() as server:
        yield server


def refusal(url: str, model: str, client: str, tiny_model, workspace) -> PrivtuneError:
    with pytest.raises(PrivtuneError) as info:
        stage.run(Endpoint(url, model, timeout=5), str(tiny_model), config(client=client), workspace, seeds=SEEDS)
    return info.value


@pytest.mark.parametrize("client", ["lean", "openai"])
def test_a_url_without_v1_gets_a_hint_with_v1(client, teacher, tiny_model, workspace):
    bare = teacher.url.removesuffix("/v1")
    error = refusal(bare, teacher.model, client, tiny_model, workspace)
    assert error.field == "--teacher-url" and "lists no models" in error.message and "no model '" not in error.message
    assert f"try --teacher-url {bare}/v1" in error.hint
    [log] = workspace.root.glob(".staging/*/egress.jsonl")
    assert len(log.read_text().splitlines()) >= 2  # the chat requests and the model-list lookup were sent


@pytest.mark.parametrize("client", ["lean", "openai"])
def test_an_unknown_model_names_the_models_the_server_lists(client, teacher, tiny_model, workspace):
    error = refusal(teacher.url, "no-such-model", client, tiny_model, workspace)
    assert error.field == "--teacher-model"
    assert "no model 'no-such-model' (404); it lists 'teacher-1'" in error.message
    [log] = workspace.root.glob(".staging/*/egress.jsonl")
    assert len(log.read_text().splitlines()) == teacher.requests  # the lookup is egress too


def test_the_full_chat_completions_url_is_recognised(teacher, tiny_model, workspace):
    error = refusal(teacher.url + "/chat/completions", teacher.model, "lean", tiny_model, workspace)
    assert f"without /chat/completions: {teacher.url}" in error.hint


def test_a_404_for_a_listed_model_says_so_and_quotes_the_server(teacher, tiny_model, workspace):
    teacher.faults.extend([404] * 8)
    error = refusal(teacher.url, teacher.model, "lean", tiny_model, workspace)
    assert "lists model 'teacher-1' but answered 404" in error.message and "scripted 404" in error.message
