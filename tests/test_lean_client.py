"""privtune's lean client against the stock openai client, same server: same results, errors and retries."""

import asyncio

import openai
import pytest

from privtune.lean_client import LeanChatClient, _backoff, _should_retry
from tests.fake_teacher import FakeTeacher

MESSAGES = [{"role": "user", "content": "Write three tasks."}]


@pytest.fixture()
def teacher():
    with FakeTeacher() as server:
        yield server


async def _both(teacher, model: str = "teacher-1", faults=()):
    """The same call through each client; returns (result or exception, requests the server saw) per client."""
    outcomes = []
    for make in (lambda: openai.AsyncOpenAI(base_url=teacher.url, api_key="k", max_retries=2, timeout=2),
                 lambda: LeanChatClient(teacher.url, "k", timeout=2, max_retries=2, concurrency=4)):
        client, before = make(), teacher.requests
        teacher.faults.extend(faults)
        create = client.create if isinstance(client, LeanChatClient) else client.chat.completions.create
        try:
            result = await create(model=model, messages=MESSAGES, max_tokens=64, stop=None)
        except openai.APIError as exc:
            result = exc
        finally:
            await client.close()
        outcomes.append((result, teacher.requests - before))
    return outcomes


def test_same_completion_type_and_fields(teacher):
    (stock, _), (lean, _) = asyncio.run(_both(teacher))
    assert type(lean) is type(stock) is openai.types.chat.ChatCompletion
    assert lean.choices[0].message.content.startswith("###") and lean.usage.completion_tokens == 50
    assert lean.model_dump().keys() == stock.model_dump().keys()


@pytest.mark.parametrize("status, error", [(401, openai.AuthenticationError), (403, openai.PermissionDeniedError),
                                           (400, openai.BadRequestError)])
def test_same_errors_without_retries(teacher, status, error):
    (stock, stock_requests), (lean, lean_requests) = asyncio.run(_both(teacher, faults=[status]))
    assert type(lean) is type(stock) is error
    assert str(lean) == str(stock) and lean.status_code == status and lean.body == stock.body
    assert lean_requests == stock_requests == 1


def test_unknown_model_is_not_found_for_both(teacher):
    (stock, _), (lean, _) = asyncio.run(_both(teacher, model="nope"))
    assert type(lean) is type(stock) is openai.NotFoundError and str(lean) == str(stock)


def test_retries_429_and_5xx_like_openai(teacher, monkeypatch):
    monkeypatch.setattr("privtune.lean_client._backoff", lambda attempt, headers: 0.01)
    (stock, stock_requests), (lean, lean_requests) = asyncio.run(_both(teacher, faults=[429, 503]))
    assert lean.choices and stock.choices and lean_requests == stock_requests == 3
    (stock, stock_requests), (lean, lean_requests) = asyncio.run(_both(teacher, faults=[500, 500, 500]))
    assert type(lean) is type(stock) is openai.InternalServerError and lean_requests == stock_requests == 3


def test_timeout_is_retried_then_raised_as_openai_timeout(teacher, monkeypatch):
    monkeypatch.setattr("privtune.lean_client._backoff", lambda attempt, headers: 0.01)
    client = LeanChatClient(teacher.url, "k", timeout=0.5, max_retries=1, concurrency=1)
    teacher.faults.extend(["timeout", "timeout"])

    async def call():
        try:
            return await client.create(model="teacher-1", messages=MESSAGES)
        finally:
            await client.close()

    with pytest.raises(openai.APITimeoutError):
        asyncio.run(call())


def test_retry_policy_follows_headers():
    assert _should_retry(429, {}) and _should_retry(502, {}) and _should_retry(408, {})
    assert not _should_retry(400, {}) and not _should_retry(404, {})
    assert not _should_retry(503, {"x-should-retry": "false"}) and _should_retry(400, {"x-should-retry": "true"})
    assert not _should_retry(429, {"retry-after": "120"})  # longer than openai's 60 s cap: give up
    assert _backoff(0, {"retry-after-ms": "250"}) == 0.25
    assert all(0.375 <= _backoff(0, {}) <= 0.5 for _ in range(50)) and _backoff(10, {}) <= 8.0
