"""style=magpie: the teacher writes each instruction from its chat template's pre-query text (/v1/completions),
then answers it (/v1/chat/completions). Against a real HTTP server on loopback with the real clients."""

import json
import socket
from pathlib import Path

import pytest
from fastapi import Request

from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError
from privtune.generate import stage
from privtune.generate.styles.magpie import pre_query_template, teacher_chat_template
from tests.fake_teacher import VERBS, WORDS, FakeTeacher
from tests.generate.test_generate import SEEDS, endpoint, lines

CHATML_USER = "<|im_start|>user\n"


class MagpieTeacher(FakeTeacher):
    """FakeTeacher's server with /v1/completions: each text completion is a new made-up instruction (`instruction`
    scripts it, `finish` its finish_reason), each chat answer a sentence; every prompt and message received is kept."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.app.post("/v1/completions")(self.completions)
        self.prompts: list[str] = []
        self.chats: list[list[dict]] = []
        self.instruction = lambda: f"{self.rng.choice(VERBS)} the {' '.join(self.rng.sample(WORDS, 6))}."
        self.finish = "stop"

    async def completions(self, request: Request):
        self.requests += 1
        body = await request.json()
        self.prompts.append(body["prompt"])
        if body.get("model") != self.model:
            return {"error": {"message": "no such model"}}
        return {"id": f"cmpl-{self.requests}", "object": "text_completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "text": " " + self.instruction(), "finish_reason": self.finish}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}}

    async def chat(self, request: Request):
        self.requests += 1
        body = await request.json()
        self.chats.append(body["messages"])
        content = f"Here is how: {' '.join(self.rng.sample(WORDS, 8))}."
        return {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}}


@pytest.fixture()
def teacher():
    with MagpieTeacher() as server:
        yield server


def config(**kwargs):
    return stage.GenerateConfig(**{"num": 20, "concurrency": 4, "style": "magpie", "teacher_template": "chatml",
                                   **kwargs})


@pytest.mark.parametrize("client", ["lean", "openai"])
def test_magpie_end_to_end_sends_the_pre_query_template_and_no_seed(client, teacher, tiny_model, workspace):
    artifact, found = stage.run(endpoint(teacher), str(tiny_model), config(client=client), workspace, seeds=SEEDS)
    rows = lines(artifact)
    assert not found and len(rows) == 20 == artifact.manifest["metrics"]["generated"]
    assert set(teacher.prompts) == {CHATML_USER}  # the pre-query template, cut from chatml.jinja
    assert all(chat == [{"role": "user", "content": chat[0]["content"]}] for chat in teacher.chats)
    instructions = {chat[0]["content"] for chat in teacher.chats}
    assert {r["messages"][0]["content"] for r in rows} <= instructions and len(instructions) == len(teacher.chats)
    sent = json.dumps([teacher.prompts, teacher.chats])
    assert not any(json.loads(l)["instruction"] in sent for l in SEEDS.read_text().splitlines())
    m = artifact.manifest
    assert m["style"] == "magpie" and rows[0]["meta"]["style"] == "magpie" and m["egress"]["items_shown"] == 0
    g = m["metrics"]["generation"]
    # requests in flight when N is reached are cancelled: logged as sent, perhaps never read by the server
    assert len(teacher.prompts) + len(teacher.chats) <= teacher.requests <= m["egress"]["requests"] <= teacher.requests + 4
    assert 40 <= g["requests"] <= teacher.requests
    assert 20 <= g["parsed"] <= 24 and g["parsed_share"] == 1.0
    assert ("style", "magpie") in stage.summary_rows(artifact)


def test_magpie_needs_no_seeds_and_keeps_the_system_prompt(teacher, tiny_model, workspace):
    artifact, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=5, system_prompt="You help parcel customers."),
                            workspace)
    assert artifact.manifest["metrics"]["generated"] == 5 and artifact.manifest["mode"] == "none"
    assert set(teacher.prompts) == {"<|im_start|>system\nYou help parcel customers.<|im_end|>\n" + CHATML_USER}
    assert all(chat[0] == {"role": "system", "content": "You help parcel customers."} for chat in teacher.chats)


def test_rejected_or_cut_off_instructions_cost_no_answer_request(teacher, tiny_model, workspace):
    calls = iter(range(10_000))
    good = teacher.instruction
    teacher.instruction = lambda: good() if next(calls) % 2 else "Draw a picture of the team."
    artifact, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=10), workspace)
    g = artifact.manifest["metrics"]["generation"]
    assert g["dropped"]["blocklist"] >= 9 and all("picture" not in c[0]["content"] for c in teacher.chats)
    assert 10 <= len(teacher.chats) <= 10 + 4 and g["unparsed_blocks"] == g["dropped"]["blocklist"]
    teacher.finish = "length"
    with pytest.raises(PrivtuneError) as info:
        stage.run(endpoint(teacher), str(tiny_model), config(num=10, max_requests=8), workspace, force=True)
    assert "truncated_instruction" in str(info.value) or "no example was accepted" in str(info.value)


def test_magpie_resumes_from_a_spent_budget_to_exactly_n(teacher, tiny_model, workspace):
    first, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=30, max_requests=10), workspace, seeds=SEEDS)
    assert "--max-requests 10" in first.manifest["stopped"] and teacher.requests == 10
    kept = [json.loads(l)["instruction"] for l in (first.path / stage.ACCEPTED).read_text().splitlines()]
    assert 0 < len(kept) <= 5
    again, found = stage.run(endpoint(teacher), str(tiny_model), config(num=30), workspace, seeds=SEEDS)
    assert not found and again.path == first.path and again.manifest["stopped"] is None
    rows = [json.loads(l) for l in (again.path / stage.ACCEPTED).read_text().splitlines()]
    assert len(rows) == 30 and [r["instruction"] for r in rows[: len(kept)]] == kept
    assert len({r["instruction"] for r in rows}) == 30
    assert teacher.requests <= again.manifest["egress"]["requests"] <= teacher.requests + 4  # cancelled at N


def test_pre_query_template_from_chatml_and_from_the_tiny_model(tiny_model, workspace):
    from privtune.data.render import named_template
    from privtune.models.loading import ModelRef, load_tokenizer

    tokenizer = load_tokenizer(ModelRef(str(tiny_model)))
    assert pre_query_template(tokenizer, named_template("chatml")) == (CHATML_USER, "<|im_end|>")
    assert pre_query_template(tokenizer, named_template("alpaca")) == ("### Instruction:\n", "### Response:")
    own = tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False)
    prefix, end = pre_query_template(tokenizer, None, system="Be brief.")
    assert own.startswith(pre_query_template(tokenizer, None)[0]) and "Be brief." in prefix and end
    for ref in (str(tiny_model), ""):  # a model folder, or the teacher's own name when it is a model here
        context = stage.StyleContext(config(teacher_template=ref), None, Endpoint("http://127.0.0.1:9/v1",
                                     str(tiny_model)), workspace, None)
        found, template, where = teacher_chat_template(context)
        assert template is None and where == str(tiny_model)
        assert pre_query_template(found, template)[0] == pre_query_template(tokenizer, None)[0]


@pytest.mark.parametrize("ref, words", [("/no/such/model-dir", "model path does not exist"),
                                        ("", "'teacher-1' is not a model here"),
                                        ("bare.jinja", "puts nothing before the user's message")])
def test_a_bad_teacher_template_is_a_clear_error_before_any_request(ref, words, teacher, tiny_model, workspace,
                                                                    tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bare.jinja").write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    with pytest.raises(PrivtuneError) as info:
        stage.run(endpoint(teacher), str(tiny_model), config(teacher_template=ref), workspace)
    assert info.value.field == "teacher_template" and words in str(info.value)
    assert teacher.requests == 0 and workspace.artifacts() == []


def test_magpie_to_a_remote_url_is_refused_before_any_socket(tiny_model, workspace, monkeypatch):
    opened = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: opened.append(address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: opened.append(a) or [])
    with pytest.raises(PrivtuneError) as info:
        stage.run(Endpoint("https://api.teacher.example.com/v1", "gpt-x"), str(tiny_model), config(), workspace)
    assert "--allow-remote" in str(info.value) and opened == []


def test_cli_style_magpie_with_set_and_dry_run(teacher, cli, tiny_model, workspace):
    common = ["generate", "--model", tiny_model, "--teacher-url", teacher.url, "--teacher-model", teacher.model,
              "--set", "style=magpie", "--set", "teacher_template=chatml", "--workspace", workspace.root]
    code, out = cli(*common, "--dry-run")
    assert code == 0 and "pre-query template" in out and CHATML_USER in out and "nothing was sent" in out, out
    assert "/completions" in out and teacher.requests == 0
    code, out = cli(*common, "--num", "6")
    assert code == 0 and "magpie" in out, out
    sent = teacher.requests
    code, out = cli("generate", "--model", tiny_model, "--teacher-url", teacher.url, "--teacher-model",
                    teacher.model, "--set", "style=nonesuch", "--workspace", workspace.root)
    assert code == 2 and "style" in out and "magpie" in out and teacher.requests == sent


@pytest.mark.real_model
def test_pre_query_template_of_the_real_teacher(smol_model, real_workspace):
    """SmolLM2-135M-Instruct's own template, found by its artifact id as privtune serve names it."""
    context = stage.StyleContext(config(teacher_template=""), None, Endpoint("http://127.0.0.1:9/v1", smol_model.id),
                                 real_workspace, None)
    prefix, end = pre_query_template(*teacher_chat_template(context)[:2])
    assert prefix.startswith("<|im_start|>system\n") and prefix.endswith(CHATML_USER) and end == "<|im_end|>"
