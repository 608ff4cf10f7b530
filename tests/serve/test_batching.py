"""`privtune serve --batching`: concurrent requests batched by transformers' continuous batching give
exactly the sequential server's greedy answers (adapter applied), stream the same text, honour stop
strings and sampling parameters, refuse what the KV cache cannot hold, and free a cancelled request."""

import asyncio
import threading
import time

import openai
import pytest
from fastapi.testclient import TestClient

from privtune.models.inference import load_for_inference
from privtune.serve.app import create_app
from tests.serve.test_serve import TICKET
from tests.serve.test_trust import running

PROMPTS = [f"{TICKET} ({i})" for i in range(6)] + ["Hello!", "Where is my parcel? It is late. Please help."]


@pytest.fixture(scope="module")
def loaded(tuned_model):
    artifact, workspace = tuned_model
    return load_for_inference(artifact.id, workspace)


@pytest.fixture(scope="module")
def batched_server(loaded):
    app = create_app(loaded, "tuned", batching=True, kv_cache_tokens=512)  # less than 8 requests need: some wait
    with running(app) as port:
        yield f"http://127.0.0.1:{port}/v1", app
    assert not app.state.batched.manager.is_running()  # the lifespan stopped the batching thread


def until_idle(app, seconds: float = 10) -> None:
    """Wait until the manager holds no request. One cancelled at its stop string runs on until the manager reads
    the cancel, and no forward may run beside the manager's (test_nothing_may_run_the_model_beside_the_manager)."""
    scheduler = app.state.batched.manager.batch_processor.scheduler
    deadline = time.time() + seconds
    while scheduler.has_pending_requests() and time.time() < deadline:
        time.sleep(0.02)
    assert not scheduler.has_pending_requests()


def sequential_answers(loaded, **extra):
    client = TestClient(create_app(loaded, "tuned"))
    return [client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": p}],
                                                      "max_tokens": 40, **extra}).json() for p in PROMPTS]


def same_or_near_tie(loaded, prompt: str, got: str, expected: str, tolerance: float = 0.05) -> bool:
    """Equal, or they part where the model's two candidate tokens are within `tolerance` in logit: batched
    kernels sum in another order than one-at-a-time ones, which can flip such a near-tie (and nothing else)."""
    import torch

    if got == expected:
        return True
    tokenizer = loaded.tokenizer
    a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (got, expected))
    k = next(i for i, (x, y) in enumerate(zip(a + [-1], b + [-2])) if x != y)
    if k >= min(len(a), len(b)):
        return False
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + b[:k]
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1]
    return abs(float(logits[a[k]] - logits[b[k]])) < tolerance


def test_batched_greedy_answers_equal_the_sequential_ones(loaded, batched_server):
    url, app = batched_server

    async def concurrently(**extra):
        async with openai.AsyncOpenAI(base_url=url, api_key="x") as client:
            answers = await asyncio.gather(*(client.chat.completions.create(
                model="tuned", messages=[{"role": "user", "content": p}], max_tokens=40, **extra) for p in PROMPTS))
        until_idle(app)  # before this thread runs the model (the sequential answers, the near-tie check)
        return answers

    expected = sequential_answers(loaded)
    got = asyncio.run(concurrently())
    texts = [r.choices[0].message.content for r in got]
    wanted = [e["choices"][0]["message"]["content"] for e in expected]
    assert all(same_or_near_tie(loaded, p, t, w) for p, t, w in zip(PROMPTS, texts, wanted)), (texts, wanted)
    assert sum(t == w for t, w in zip(texts, wanted)) >= len(PROMPTS) - 1  # a near-tie is rare, not the rule
    assert all((r.choices[0].finish_reason, r.usage.completion_tokens) ==
               (e["choices"][0]["finish_reason"], e["usage"]["completion_tokens"])
               for r, e, t, w in zip(got, expected, texts, wanted) if t == w)
    assert any(t.startswith('{"category"') for t in texts)
    assert not same_or_near_tie(loaded, PROMPTS[0], '{"category": "zzz"}', wanted[0])  # the check can fail

    stopped = asyncio.run(concurrently(stop=['"priority"']))
    stop_expected = sequential_answers(loaded, stop=['"priority"'])
    texts = [r.choices[0].message.content for r in stopped]
    wanted = [e["choices"][0]["message"]["content"] for e in stop_expected]
    assert all(same_or_near_tie(loaded, p, t, w) for p, t, w in zip(PROMPTS, texts, wanted)), \
        [(t, w) for t, w in zip(texts, wanted) if t != w]
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


def test_nothing_may_run_the_model_beside_the_manager(loaded, batched_server):
    """Why tests wait for an idle manager before they run the model: for the length of each of the manager's
    forwards, transformers (5.24, merge_with_config_defaults) sets the shared `config.is_causal` to False (the
    manager brings its own mask), so a forward from another thread then attends both ways: answers change (seen
    as a rare failure of the greedy test's stop half). privtune serve --batching runs every generation through
    the manager. If this fails, transformers stopped doing it and the waits can go."""
    url, app = batched_server
    backbone = loaded.model.get_base_model().model
    seen = []
    hook = backbone.layers[0].register_forward_pre_hook(
        lambda module, args: seen.append(getattr(backbone.config, "is_causal", None)))
    try:
        openai.OpenAI(base_url=url, api_key="x").chat.completions.create(
            model="tuned", messages=[{"role": "user", "content": TICKET}], max_tokens=4)
        until_idle(app)
        assert seen and set(seen) == {False}
        import torch

        with torch.no_grad():
            backbone(input_ids=loaded.tokenizer(TICKET, return_tensors="pt")["input_ids"])
        assert seen[-1] is not False  # restored after each of the manager's forwards; a forward here is causal
    finally:
        hook.remove()


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
        until_idle(app, seconds=5)
        return out

    out = asyncio.run(cancel_after_first_piece())
    assert out["finish_reason"] == "cancelled"
    assert not batched.manager.batch_processor.scheduler.active_requests
    assert not batched.manager.output_router.result_handlers  # nothing left behind for the cancelled request
    assert batched.manager.is_running()


def test_greedy_rows_take_the_argmax_without_the_sort_and_the_rest_is_transformers_top_p():
    """The swapped warper gives what transformers' own does on every row: greedy rows (top_p 0) keep only
    their argmax, nucleus rows the same nucleus, top_p 1 rows everything; and a greedy-only batch never sorts."""
    import torch
    from transformers import TopPLogitsWarper
    from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingTopPLogitsWarper

    from privtune.serve.batching import use_argmax_for_greedy

    processors = [ContinuousBatchingTopPLogitsWarper(TopPLogitsWarper(top_p=0.95))]
    use_argmax_for_greedy(processors)
    swapped, original = processors[0], ContinuousBatchingTopPLogitsWarper(TopPLogitsWarper(top_p=0.95))
    assert type(swapped) is not ContinuousBatchingTopPLogitsWarper
    scores = torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3
    args = torch.tensor([0.0, 0.9, 1.0, 0.0, 0.5], dtype=torch.float32).view(torch.int32)
    got, want = swapped(scores, args), original(scores, args)
    assert torch.equal(got, want)
    for row in (0, 3):
        assert torch.isfinite(got[row]).sum() == 1 and got[row].argmax() == scores[row].argmax()
    assert torch.isfinite(got[1]).sum() > 1

    sorts = []
    real_sort = torch.sort
    torch.sort = lambda *a, **k: sorts.append(1) or real_sort(*a, **k)
    try:
        swapped(scores[:2], torch.tensor([0.0, 0.0], dtype=torch.float32).view(torch.int32))
        assert sorts == []
        original(scores[:2], torch.tensor([0.0, 0.0], dtype=torch.float32).view(torch.int32))
        assert sorts == [1]
    finally:
        torch.sort = real_sort


def test_rows_with_one_candidate_take_it_and_the_others_are_drawn(monkeypatch):
    """The sampler's shortcut: a greedy row (one finite score) gets its token without a draw; rows with a
    choice are drawn by transformers' softmax and multinomial, the same draws as its own code gives them."""
    import torch
    from transformers.generation.continuous_batching.model_runner import ModelRunner

    from privtune.serve.batching import sample_only_rows_with_a_choice

    original = getattr(ModelRunner._sample, "transformers_sample", ModelRunner._sample)  # a server may have run
    monkeypatch.setattr(ModelRunner, "_sample", original)
    sample_only_rows_with_a_choice()
    sample_only_rows_with_a_choice()  # once per process, however many servers
    assert ModelRunner._sample is not original and ModelRunner._sample.privtune_single_choice

    runner = ModelRunner.__new__(ModelRunner)
    runner.do_sample, runner.return_logprobs = True, False
    scores = torch.randn(1, 4, 300, generator=torch.Generator().manual_seed(1))
    scores[0, 0, :] = float("-inf")
    scores[0, 0, 17] = 2.0  # greedy rows after use_argmax_for_greedy: one finite score
    scores[0, 2, :] = float("-inf")
    scores[0, 2, 250] = -1.0
    draws = []
    real_multinomial = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda probs, **k: draws.append(probs.shape[0]) or real_multinomial(probs, **k))
    got = torch.zeros(2, 8, dtype=torch.int64)
    torch.manual_seed(5)
    runner._sample(scores, got)
    assert draws == [2]  # only the two rows with a choice are drawn
    assert got[0, 0] == 17 and got[0, 2] == 250

    want = torch.zeros(2, 8, dtype=torch.int64)
    torch.manual_seed(5)
    original(runner, scores[:, [1, 3]], want)  # transformers' own sampler on the same two rows
    assert torch.equal(got[0, [1, 3]], want[0, :2])
