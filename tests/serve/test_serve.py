"""`privtune serve` with the real openai client: sync, async, streaming, auth, bad requests, concurrency."""

import asyncio
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from privtune.models.inference import load_for_inference
from privtune.serve.app import create_app
from tests.fake_teacher import _free_port

KEY = "serve-test-key-123"


@pytest.fixture(scope="module")
def server(tuned_model):
    artifact, workspace = tuned_model
    loaded = load_for_inference(artifact.id, workspace)
    port = _free_port()
    instance = uvicorn.Server(uvicorn.Config(create_app(loaded, "tuned", api_key=KEY), host="127.0.0.1", port=port,
                                             log_level="error"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=5)


TICKET = "Classify the support ticket. Answer with JSON: category and priority.\n\nMy order #1042 has not arrived. No rush."


def test_chat_sync_answers_and_stops(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)
    assert [m.id for m in client.models.list()] == ["tuned"]
    reply = client.chat.completions.create(model="tuned", messages=[{"role": "user", "content": TICKET}], max_tokens=40)
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content.startswith('{"category"')
    assert reply.usage.completion_tokens < 40
    text = client.completions.create(model="tuned", prompt="<|im_start|>user\nHi<|im_end|>\n", max_tokens=5)
    assert text.choices[0].text is not None and text.usage.completion_tokens <= 5


def test_streaming_and_async(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tuned", messages=[{"role": "user", "content": TICKET}], max_tokens=40, stream=True)]
    streamed = "".join(pieces)
    plain = client.chat.completions.create(model="tuned", messages=[{"role": "user", "content": TICKET}], max_tokens=40)
    assert len(pieces) > 3 and streamed == plain.choices[0].message.content

    async def many():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY) as aclient:
            return await asyncio.gather(*(aclient.chat.completions.create(
                model="tuned", messages=[{"role": "user", "content": f"{TICKET} ({i})"}], max_tokens=24)
                for i in range(16)))

    replies = asyncio.run(many())
    assert len(replies) == 16 and all(r.choices[0].message.content for r in replies)


def test_key_required(server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong").models.list()
    assert httpx.get(f"{server}/v1/models").status_code == 401


@pytest.mark.parametrize("body, status", [
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400),
    ({"messages": []}, 400),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400),
    ({"messages": [{"role": "user"}]}, 400),
    ({"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}, 400),
])
def test_bad_requests_get_4xx_with_a_message(server, body, status):
    response = httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == status and response.json()["error"]["message"]
    broken = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert broken.status_code == 400
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}  # still up
