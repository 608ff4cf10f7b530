"""A lean async client for chat completions: the `openai` client's semantics at a fraction of its CPU.

A synthetic-data run keeps hundreds of requests in flight, so the client's CPU per request sets the
ceiling (k requests in flight at latency L can reach k/L requests/s only if k x CPU-per-request
stays well under L). Profiled against a local endpoint, `AsyncOpenAI.chat.completions.create`
spends 3-6 ms of CPU a request on its default transport: httpcore's pool scans every connection for
every request (O(k) each, openai-python #1596, httpx #3215), the request's TypedDict transform walks
every message, httpx builds and parses URLs and headers, and the response is built field by field.
Even on its aiohttp backend ~2 ms remain. This client sends the same JSON with aiohttp's pool and
validates the answer with pydantic's compiled validator, 0.4-0.5 ms a request (benchmarks/bench_teacher.py).

What stays the same, so callers cannot tell the difference: the result is an
`openai.types.chat.ChatCompletion`; errors are the `openai` exception classes built by the `openai`
client's public classes (same class, message, `status_code`, `body`); retries follow `openai`'s
policy (408, 409, 429, 5xx, timeouts and connection errors; `x-should-retry` obeyed; `retry-after`
(-ms, seconds or an HTTP date) honoured up to a cap, a longer one not retried; else a delay doubling
from an initial one to a maximum, less up to 25% jitter). The cap and delays are read from the
installed `openai` at import (120 s, 0.5 s and 8 s in openai 3.x), and tests/test_lean_client.py
checks the policy against the installed client's own methods, so an upgrade that changes it fails a test.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from random import random

OPENAI_3_RETRY = {"DEFAULT_MAX_RETRIES": 2, "INITIAL_RETRY_DELAY": 0.5, "MAX_RETRY_DELAY": 8.0,
                  "MAX_RETRY_AFTER_DELAY": 120.0}
"""openai 3.x's retry constants: used only if the installed client no longer has them where 3.x keeps them."""


def _openai_retry_constants() -> dict:
    """The installed openai client's retry constants. They sit in its private `_constants` module, so a
    release that moves them falls back to 3.x's values instead of breaking generate."""
    try:
        from openai import _constants

        return {name: type(default)(getattr(_constants, name)) for name, default in OPENAI_3_RETRY.items()}
    except (ImportError, AttributeError, TypeError, ValueError):
        return dict(OPENAI_3_RETRY)


_RETRY = _openai_retry_constants()
DEFAULT_MAX_RETRIES: int = _RETRY["DEFAULT_MAX_RETRIES"]
INITIAL_RETRY_DELAY: float = _RETRY["INITIAL_RETRY_DELAY"]
MAX_RETRY_DELAY: float = _RETRY["MAX_RETRY_DELAY"]
MAX_RETRY_AFTER: float = _RETRY["MAX_RETRY_AFTER_DELAY"]
STATUS_ERRORS = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
                 404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError"}
"""The openai exception class per status, as `AsyncOpenAI._make_status_error` picks it (5xx: InternalServerError)."""


class LeanChatClient:
    """`await client.create(**params)` ~ `await AsyncOpenAI(...).chat.completions.create(**params)`."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float, max_retries: int = DEFAULT_MAX_RETRIES,
                 concurrency: int, on_send=None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.models_url = base_url.rstrip("/") + "/models"
        self.on_send = on_send
        """Called with the body's size just before each request (retries too) leaves: egress accounting."""
        self.max_retries = max_retries
        self.timeout = timeout
        self.concurrency = concurrency
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        self._session = None

    def _open(self):
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
            self._session = aiohttp.ClientSession(connector=connector,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def create(self, **params):
        """One chat completion, retried like the openai client retries it."""
        body = json.dumps({key: value for key, value in params.items() if value is not None}).encode()
        for attempt in range(self.max_retries + 1):
            retries_left = attempt < self.max_retries
            try:
                status, headers, payload = await self._post(body)
            except (asyncio.TimeoutError, OSError, _aiohttp_error()) as exc:
                if not retries_left:
                    raise self._transport_error(exc) from exc
                await asyncio.sleep(_backoff(attempt, None))
                continue
            if status < 300:
                return self._completion(status, headers, payload)
            if not retries_left or not _should_retry(status, headers):
                raise self._status_error(status, headers, payload)
            await asyncio.sleep(_backoff(attempt, headers))
        raise AssertionError("unreachable")

    async def models(self) -> list[str]:
        """The model ids at GET <base_url>/models, as `(await AsyncOpenAI(...).models.list()).data` has them."""
        if self.on_send:
            self.on_send(0)
        async with self._open().get(self.models_url, headers=self._headers) as response:
            status, headers, payload = response.status, response.headers, await response.read()
        if status >= 300:
            raise self._status_error(status, headers, payload)
        return [item["id"] for item in json.loads(payload)["data"]]

    async def _post(self, body: bytes) -> tuple[int, dict, bytes]:
        if self.on_send:
            self.on_send(len(body))
        async with self._open().post(self.url, data=body, headers=self._headers) as response:
            return response.status, response.headers, await response.read()

    def _response_model(self):
        """The openai type an answer parses into, and what to call it in an error."""
        from openai.types.chat import ChatCompletion

        return ChatCompletion, "a chat completion"

    def _completion(self, status: int, headers, payload: bytes):
        """Validated by pydantic-core; a server that leaves out fields still parses, as with openai's."""
        import openai
        from pydantic import ValidationError

        model, what = self._response_model()
        try:
            return model.model_validate_json(payload)
        except ValidationError:
            pass
        try:
            data = json.loads(payload)
            if isinstance(data, dict):
                return model.construct(**data)
        except ValueError:
            data = payload.decode("utf-8", "replace")
        raise openai.APIResponseValidationError(self._response(status, headers, payload), data,
                                                message=f"the response is not {what}")

    def _request(self):
        import httpx2

        return httpx2.Request("POST", self.url)

    def _response(self, status: int, headers, payload: bytes):
        """The answer as the openai client would have seen it: only built on the error paths."""
        import httpx2

        return httpx2.Response(status, headers=dict(headers), content=payload, request=self._request())

    def _transport_error(self, exc: Exception):
        import openai

        if isinstance(exc, asyncio.TimeoutError):
            return openai.APITimeoutError(request=self._request())
        return openai.APIConnectionError(request=self._request())

    def _status_error(self, status: int, headers, payload: bytes):
        """The exception the openai client raises for this answer: its class for the status, "Error code: N
        - <error.message>", and the body's `error` object (or the text) as `body`."""
        import openai

        response = self._response(status, headers, payload)
        message, body = f"Error code: {status}", response.text.strip()
        try:
            body = json.loads(body)
        except ValueError:
            pass
        else:
            error = body.get("error", body) if isinstance(body, dict) else None
            text = error.get("message") if isinstance(error, dict) else None
            if isinstance(text, str) and text:
                message += f" - {text}"
        name = STATUS_ERRORS.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
        return getattr(openai, name)(message, response=response,
                                     body=body.get("error", body) if isinstance(body, dict) else body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _aiohttp_error():
    import aiohttp

    return aiohttp.ClientError


def _retry_after(headers) -> float | None:
    """Seconds the server asks to wait, read as the openai client reads them: `retry-after-ms`, then
    `retry-after` as seconds, then as an HTTP date; a number too large for a float counts as over the cap."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value)
        except ValueError:
            continue
        if delay == math.inf and value.strip().lower() not in ("inf", "+inf", "infinity", "+infinity"):
            return MAX_RETRY_AFTER + 1
        return delay / scale
    try:
        date = email.utils.parsedate_tz(headers.get("retry-after"))
        return None if date is None else float(email.utils.mktime_tz(date) - time.time())
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _should_retry(status: int, headers) -> bool:
    retry_after = _retry_after(headers)
    if retry_after is not None and math.isfinite(retry_after) and retry_after > MAX_RETRY_AFTER:
        return False
    told = headers.get("x-should-retry")
    if told in ("true", "false"):
        return told == "true"
    return status in (408, 409, 429) or status >= 500


def _backoff(attempt: int, headers) -> float:
    """Seconds to wait before retry number `attempt + 1`."""
    retry_after = _retry_after(headers)
    if retry_after is not None and math.isfinite(retry_after) and 0 < retry_after <= MAX_RETRY_AFTER:
        return retry_after
    delay = min(INITIAL_RETRY_DELAY * 2.0 ** min(attempt, 1000), MAX_RETRY_DELAY) * (1 - 0.25 * random())
    return max(delay, 0.0)
