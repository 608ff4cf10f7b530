"""Serve stops on the chat template's end of turn when the tokenizer's eos is another token."""

import torch
from fastapi.testclient import TestClient

from privtune.models.inference import load_for_inference
from privtune.serve.app import create_app
from tests.models.test_stopping import with_foreign_eos
from tests.serve.test_serve import TICKET

LIMIT = 64


def chat(client: TestClient, **extra) -> dict:
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": TICKET}],
                                                         "max_tokens": LIMIT, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_serve_finishes_with_stop_when_eos_is_not_the_end_of_turn(tuned_model):
    artifact, workspace = tuned_model
    loaded = load_for_inference(artifact.id, workspace)
    expected = chat(TestClient(create_app(loaded, "tuned")))["choices"][0]["message"]["content"]

    loaded = with_foreign_eos(loaded)
    client = TestClient(create_app(loaded, "tuned"))
    reply = chat(client)
    assert reply["choices"][0]["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] < LIMIT
    assert reply["choices"][0]["message"]["content"] == expected and expected.startswith('{"category"')
    streamed = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": TICKET}],
                                                         "max_tokens": LIMIT, "stream": True}).text
    assert '"finish_reason": "stop"' in streamed

    # stopping on the tokenizer's eos alone, as before: the same request runs to the limit
    tokenizer = loaded.tokenizer
    text = tokenizer.apply_chat_template([{"role": "user", "content": TICKET}], tokenize=False,
                                         add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=LIMIT, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    assert out.shape[1] - inputs["input_ids"].shape[1] == LIMIT
