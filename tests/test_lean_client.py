"""privtune's lean client against the stock openai client, same server: same results, errors and retries."""

import asyncio
import email.utils
import sys
import time

import httpx2
import openai
import pytest

from privtune import lean_client
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
    assert _should_retry(429, {"retry-after": "100"}) and not _should_retry(429, {"retry-after": "121"})
    assert _backoff(0, {"retry-after-ms": "250"}) == 0.25
    assert all(0.375 <= _backoff(0, {}) <= 0.5 for _ in range(50)) and _backoff(10, {}) <= 8.0


def test_retry_constants_are_the_installed_clients():
    from openai import _constants

    assert (lean_client.DEFAULT_MAX_RETRIES, lean_client.INITIAL_RETRY_DELAY, lean_client.MAX_RETRY_DELAY,
            lean_client.MAX_RETRY_AFTER) == (_constants.DEFAULT_MAX_RETRIES, _constants.INITIAL_RETRY_DELAY,
                                             _constants.MAX_RETRY_DELAY, _constants.MAX_RETRY_AFTER_DELAY)


def test_retry_constants_fall_back_when_openai_moves_them(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai._constants", None)  # "import openai._constants" now fails
    monkeypatch.delattr(openai, "_constants", raising=False)
    assert lean_client._openai_retry_constants() == lean_client.OPENAI_3_RETRY
    monkeypatch.undo()
    assert lean_client._openai_retry_constants() == lean_client.OPENAI_3_RETRY  # the fallback is still current


HEADERS = [{}, {"retry-after": "3"}, {"retry-after": "100"}, {"retry-after": "120"}, {"retry-after": "121"},
           {"retry-after": "1e400"}, {"retry-after": "inf"}, {"retry-after": "nan"}, {"retry-after": "-1"},
           {"retry-after": "0"}, {"retry-after-ms": "250"}, {"retry-after-ms": "x", "retry-after": "2"},
           {"retry-after": "soon"}, {"x-should-retry": "true"}, {"x-should-retry": "false"},
           {"retry-after": "200", "x-should-retry": "true"}]


@pytest.mark.parametrize("headers", HEADERS, ids=[str(h) for h in HEADERS])
@pytest.mark.parametrize("status", [400, 404, 408, 409, 422, 429, 500, 503])
def test_retry_decision_is_the_installed_clients(status, headers):
    """openai's own `_should_retry` is the reference: the policy the lean client claims to copy."""
    stock = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("POST", "http://127.0.0.1:9/v1"))
    assert _should_retry(status, response.headers) == stock._should_retry(response)


@pytest.mark.parametrize("headers", HEADERS + [{"retry-after": email.utils.formatdate(time.time() + 90, usegmt=True)}],
                         ids=[str(h) for h in HEADERS] + ["http-date"])
@pytest.mark.parametrize("attempt", [0, 1, 3, 6])
def test_retry_delay_is_the_installed_clients(attempt, headers, monkeypatch):
    from openai import _base_client
    from openai._models import FinalRequestOptions

    monkeypatch.setattr(_base_client, "random", lambda: 0.6)
    monkeypatch.setattr(lean_client, "random", lambda: 0.6)
    stock = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=7)
    expected = stock._calculate_retry_timeout(7 - attempt, FinalRequestOptions(method="post", url="/x"),
                                              httpx2.Headers(headers))
    dated = any("," in value for value in headers.values())  # an HTTP date: both read the clock
    assert _backoff(attempt, httpx2.Headers(headers)) == pytest.approx(expected, abs=0.5 if dated else 1e-9)


BODIES = [b'{"error": {"message": "slow down", "type": "rate"}}', b'{"error": {"type": "no message"}}',
          b'{"detail": "Not Found"}', b'{"message": "top-level"}', b"plain text, not JSON", b"", b'["a list"]']


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 418, 422, 429, 500, 503])
def test_status_errors_are_the_installed_clients(status, body):
    """Built from openai's public exception classes; its private `_make_status_error_from_response` is the reference."""
    lean = LeanChatClient("http://127.0.0.1:9/v1", "k", timeout=1, concurrency=1)
    stock = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")
    headers = {"content-type": "application/json", "x-request-id": "req-1"}
    mine = lean._status_error(status, headers, body)
    theirs = stock._make_status_error_from_response(httpx2.Response(status, headers=headers, content=body,
                                                                    request=lean._request()))
    assert type(mine) is type(theirs) and str(mine) == str(theirs) and mine.body == theirs.body
    assert mine.status_code == theirs.status_code and mine.request_id == theirs.request_id == "req-1"
