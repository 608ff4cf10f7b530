"""Generate stops instead of asking forever: contradictory filters are refused before any request, a
teacher whose answers add nothing stops the run after N requests in a row, and --max-requests is a budget.
What was accepted is kept: written as the dataset, and the same command continues from it."""

import pytest

from privtune.errors import PrivtuneError
from privtune.generate import stage
from tests.conftest import ROOT
from tests.fake_teacher import FakeTeacher
from tests.generate.test_generate import config, endpoint

SEEDS = ROOT / "data" / "seeds.jsonl"


@pytest.fixture()
def teacher(monkeypatch):
    monkeypatch.setattr("privtune.lean_client._backoff", lambda attempt, headers: 0.01)
    with FakeTeacher() as server:
        server.faults.extend([None] * 150 + [401] * 50)  # backstop: a run that never stops is refused, not hung
        yield server


@pytest.mark.parametrize("args, both", [(["--set", "min_words=50", "--set", "max_words=2"], ("min_words", "max_words")),
                                        (["--set", "max_words=0"], ("max_words",)), (["--set", "top_p=0"], ("top_p",)),
                                        (["--max-requests", "-1"], ("max_requests",))])
def test_contradictory_settings_are_refused_before_any_request(args, both, teacher, cli, tiny_model, workspace):
    code, out = cli("generate", "--model", tiny_model, "--seeds", SEEDS, "--teacher-url", teacher.url,
                    "--teacher-model", teacher.model, *args, "--workspace", workspace.root)
    assert code == 2 and all(name in out for name in both) and "Traceback" not in out, out
    assert teacher.requests == 0


def test_a_teacher_repeating_itself_stops_and_keeps_what_was_accepted(teacher, tiny_model, workspace):
    teacher.repeat = True  # the same five tasks in every answer: after the first, nothing new
    settings = config(num=40, concurrency=4)
    artifact, found = stage.run(endpoint(teacher), str(tiny_model), settings, workspace, seeds=SEEDS)
    limit = stage.idle_limit(settings)
    assert limit == 20 and not found
    assert "20 requests in a row added no example" in artifact.manifest["stopped"]
    assert artifact.manifest["metrics"]["generated"] == 5  # the first answer's five are kept
    assert limit + 1 <= teacher.requests <= limit + settings.concurrency  # what was in flight is answered, no more
    assert artifact.manifest["egress"]["requests"] == teacher.requests
    assert ("stopped short", artifact.manifest["stopped"]) in stage.summary_rows(artifact)
    teacher.repeat = False  # the same command goes on from the five, to the same dataset id
    again, found = stage.run(endpoint(teacher), str(tiny_model), settings, workspace, seeds=SEEDS)
    assert not found and again.path == artifact.path and again.manifest["stopped"] is None
    assert again.manifest["metrics"]["generated"] == 40
    assert again.manifest["egress"]["requests"] == teacher.requests


def test_filters_nothing_passes_stop_with_an_error_and_nothing_lost(teacher, tiny_model, workspace):
    settings = config(num=40, concurrency=4, min_words=40)  # the fake's instructions have 8 words
    with pytest.raises(PrivtuneError) as info:
        stage.run(endpoint(teacher), str(tiny_model), settings, workspace, seeds=SEEDS)
    message = str(info.value)
    assert "no example was accepted" in message and "too_short" in message and "min_words" in message
    assert teacher.requests <= stage.idle_limit(settings) + settings.concurrency
    [log] = workspace.root.glob(".staging/*/egress.jsonl")  # kept for the resume, with every request counted
    assert len(log.read_text().splitlines()) == teacher.requests


@pytest.mark.parametrize("client", ["lean", "openai"])
def test_max_requests_is_a_budget_that_a_rerun_extends(client, teacher, tiny_model, workspace):
    teacher.faults.appendleft(500)  # a retry spends the budget too
    artifact, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=200, max_requests=6, client=client),
                            workspace, seeds=SEEDS)
    assert teacher.requests == 6 == artifact.manifest["egress"]["requests"]
    assert "--max-requests 6" in artifact.manifest["stopped"] and 0 < artifact.manifest["metrics"]["generated"] < 30
    again, found = stage.run(endpoint(teacher), str(tiny_model), config(num=200, max_requests=10, client=client),
                             workspace, seeds=SEEDS)
    assert not found and again.path == artifact.path  # the budget is not part of the dataset's identity
    assert teacher.requests == 10 == again.manifest["egress"]["requests"]
    assert again.manifest["metrics"]["generated"] > artifact.manifest["metrics"]["generated"]
