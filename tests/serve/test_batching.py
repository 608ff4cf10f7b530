"""`privtune serve --batching`: concurrent requests batched by transformers' continuous batching give
exactly the sequential server's greedy answers (adapter applied), stream the same text, honour stop
strings and sampling parameters, refuse what the KV cache cannot hold, and free a cancelled request."""

import asyncio
import threading
import time

import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient

from privtune.models.inference import load_for_inference
from privtune.serve.app import create_app
from tests.fake_teacher import _free_port
from tests.serve.test_serve import TICKET

PROMPTS = [f"{TICKET} ({i})" for i in range(6)] + ["Hello!", "Where is my parcel? It is late. Please help."]


@pytest.fixture(scope="module")
def loaded(tuned_model):
    artifact, workspace = tuned_model
    return load_for_inference(artifact.id, workspace)


@pytest.fixture(scope="module")
def batched_server(loaded):
    app = create_app(loaded, "tuned", batching=True, kv_cache_tokens=512)  # less than 8 requests need: some wait
    port = _free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1", app
    instance.should_exit = True
    thread.join(timeout=10)
    assert not app.state.batched.manager.is_running()  # the lifespan stopped the batching thread


def sequential_answers(loaded, **extra):
    client = TestClient(create_app(loaded, "tuned"))
    return [client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": p}],
                                                      "max_tokens": 40, **extra}).json() for p in PROMPTS]


def test_batched_greedy_answers_equal_the_sequential_ones(loaded, batched_server):
    url, _ = batched_server

    async def concurrently(**extra):
        async with openai.AsyncOpenAI(base_url=url, api_key="x") as client:
            return await asyncio.gather(*(client.chat.completions.create(
                model="tuned", messages=[{"role": "user", "content": p}], max_tokens=40, **extra) for p in PROMPTS))

    expected = sequential_answers(loaded)
    got = asyncio.run(concurrently())
    assert [r.choices[0].message.content for r in got] == [e["choices"][0]["message"]["content"] for e in expected]
    assert [r.choices[0].finish_reason for r in got] == [e["choices"][0]["finish_reason"] for e in expected]
    assert [r.usage.completion_tokens for r in got] == [e["usage"]["completion_tokens"] for e in expected]
    assert any(r.choices[0].message.content.startswith('{"category"') for r in got)

    stopped = asyncio.run(concurrently(stop=['"priority"']))
    stop_expected = sequential_answers(loaded, stop=['"priority"'])
    assert [r.choices[0].message.content for r in stopped] == [e["choices"][0]["message"]["content"]
                                                              for e in stop_expected]
    assert any(r.choices[0].finish_reason == "stop" and '"priority"' not in r.choices[0].message.content
               for r in stopped)


def test_streaming_sampling_and_limits(batched_server):
    url, _ = batched_server
    client = openai.OpenAI(base_url=url, api_key="x")
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tuned", messages=[{"role": "user", "content": TICKET}], max_tokens=40, stream=True)]
    plain = client.chat.completions.create(model="tuned", messages=[{"role": "user", "content": TICKET}], max_tokens=40)
    assert len(pieces) > 3 and "".join(pieces) == plain.choices[0].message.content
    sampled = client.chat.completions.create(model="tuned", messages=[{"role": "user", "content": TICKET}],
                                             max_tokens=16, temperature=1.5, top_p=0.9)
    assert sampled.usage.completion_tokens >= 1
    with pytest.raises(openai.BadRequestError, match="KV cache of 512 tokens"):
        client.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "hi"}], max_tokens=600)
    again = client.chat.completions.create(model="tuned", messages=[{"role": "user", "content": TICKET}], max_tokens=40)
    assert again.choices[0].message.content == plain.choices[0].message.content  # the worker survived all that


def test_a_cancelled_request_frees_its_slot(loaded, batched_server):
    _, app = batched_server
    batched = app.state.batched
    inputs = batched.prepare(loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": TICKET}], tokenize=False, add_generation_prompt=True), 400)

    class Request:
        max_tokens, temperature, top_p, stop = 400, 1.0, 1.0, None

    async def cancel_after_first_piece():
        cancelled = threading.Event()
        out = await batched.generate(inputs, Request, lambda piece: cancelled.set(), cancelled)
        deadline = time.time() + 5
        while batched.manager.batch_processor.scheduler.active_requests and time.time() < deadline:
            await asyncio.sleep(0.05)
        return out

    out = asyncio.run(cancel_after_first_piece())
    assert out["finish_reason"] == "cancelled"
    assert not batched.manager.batch_processor.scheduler.active_requests
    assert not batched.manager.output_router.result_handlers  # nothing left behind for the cancelled request
    assert batched.manager.is_running()
