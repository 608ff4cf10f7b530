"""`privtune serve`: one model behind an OpenAI-compatible API (FastAPI + uvicorn).

transformers' own `transformers serve` needs the request's model to be the exact path and does not
apply a PEFT adapter, so privtune serves with a small FastAPI app: /v1/models, /v1/chat/completions
(with streaming), /v1/completions, optional bearer-token auth. Generation runs one request at a
time in a worker thread (the model is not thread-safe) and requests queue, or, with `batching`,
concurrent requests are batched continuously (serve/batching.py). Bad requests get a 4xx with a
message, anything unexpected a JSON 500, never a traceback.

Nothing a client sends may hold the server: a body over `max_body_bytes` is refused (413) as it
arrives, before it is buffered or parsed; a prompt over `max_prompt_tokens` is refused (400) before
it reaches the model; a client that hangs up, streaming or not, stops its generation; and on
SIGTERM in-flight work gets DRAIN_SECONDS to finish, then is cancelled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from jinja2.exceptions import TemplateError
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from privtune.errors import PrivtuneError
from privtune.models.inference import LoadedModel
from privtune.models.stopping import stop_token_ids

MAX_BODY_BYTES = 1024 * 1024
"""Default request body limit: a 128k-token English prompt is ~0.5 MB; a 50 MB body once held 10 GB."""
FALLBACK_PROMPT_TOKENS = 8192
"""Prompt limit for a model whose config names no context length."""
DRAIN_SECONDS = 5
"""On SIGTERM, in-flight requests get this long to finish before they are cancelled."""
POLL_SECONDS = 0.25
"""How often a waiting non-streaming request checks that its client is still there."""
KV_CACHE_TOKENS = 16384
"""--batching: tokens the KV cache holds across all requests in flight (a 135M model: ~0.7 GiB in fp32)."""


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Sampling(BaseModel):
    model: str | None = None
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stream: bool = False
    stop: list[str] | str | None = None
    n: int = Field(1, ge=1, le=1)
    seed: int | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Sampling):
    prompt: str


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


class BodyLimit:
    """Refuse a request body over `limit` bytes as it arrives, before anything buffers or parses it: at
    once by its Content-Length, else by counting the chunks of a body that declares none.

    Not FastAPI's `max_body_size`: that one answers a too-large Content-Length with plain text, and
    clients of an OpenAI-style API read errors as JSON.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit
        self.message = f"request body over {limit} bytes (privtune serve --max-body-bytes)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(413, self.message)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # FastAPI re-raises it from its body reading; http_error answers
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)


class ShutdownCancel:
    """A request whose task is cancelled before its response started gets a JSON 503, at whatever stage:
    reading its body, tokenizing (queued behind other requests for an executor thread), waiting for the
    model. uvicorn cancels in-flight requests' tasks when the drain time after SIGTERM runs out, and a
    CancelledError is not an Exception: no handler sees it, and uvicorn answered a plain-text 500 and
    logged a traceback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if started:  # a stream already under way: nothing to answer; uvicorn closes the connection
                raise
            await _error(503, "the server is shutting down")(scope, receive, send)


class Generator:
    """Runs generate() one request at a time, streaming text pieces through a queue.

    Generation stops on any of the model's stop tokens: the chat template's end of turn as well as the
    tokenizer's eos, which differ for many chat models (models/stopping.py).
    """

    def __init__(self, loaded: LoadedModel, max_prompt_tokens: int | None = None):
        self.loaded = loaded
        self.lock = threading.Lock()
        self.stops = stop_token_ids(loaded.model, loaded.tokenizer)
        self.context = getattr(loaded.model.config, "max_position_embeddings", None)
        self.max_prompt_tokens = max_prompt_tokens or self.context or FALLBACK_PROMPT_TOKENS

    def encode(self, text: str):
        """The prompt text as the model gets it, tokenized; a ValueError (a 400) if it is over the limit.

        A prompt far over the limit is refused from its head, 16 characters per allowed token (more than
        almost any token holds), without tokenizing, and holding, all of a megabyte body.
        """
        tokenize = lambda piece: self.loaded.tokenizer(piece, return_tensors="pt", add_special_tokens=False)
        head = text[: 16 * self.max_prompt_tokens]
        inputs = tokenize(head)
        if len(head) < len(text) and inputs["input_ids"].shape[1] <= self.max_prompt_tokens:
            head, inputs = text, tokenize(text)  # the head did not decide
        length = inputs["input_ids"].shape[1]
        if length > self.max_prompt_tokens:
            counted = f"its first {len(head)} characters are {length} tokens" if len(head) < len(text) else \
                f"it is {length} tokens"
            raise ValueError(f"prompt too long: {counted}; this server takes at most {self.max_prompt_tokens} "
                             "(privtune serve --max-prompt-tokens)")
        return inputs

    def prepare(self, text: str, max_tokens: int):
        """Tokenize and check the limits before the request waits for the model: a ValueError is a 400."""
        inputs = self.encode(text)
        length = inputs["input_ids"].shape[1]
        if self.context and length + max_tokens > self.context:
            raise ValueError(f"prompt ({length} tokens) + max_tokens exceeds the model's context of {self.context}")
        return inputs.to(self.loaded.model.device)

    def run(self, inputs, request: Sampling, on_text, cancelled: threading.Event) -> dict:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        prompt_tokens = int(inputs["input_ids"].shape[1])

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancelled.is_set()

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": request.temperature > 0}
        if request.temperature > 0:
            sampling.update(temperature=request.temperature, top_p=request.top_p)
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        with self.lock:
            if cancelled.is_set():  # its client left, or the server stopped, while it queued
                return {"text": "", "finish_reason": "cancelled", "prompt_tokens": prompt_tokens,
                        "completion_tokens": 0}
            if request.seed is not None:
                torch.manual_seed(request.seed)
            result: dict = {}

            def work():
                try:
                    with torch.no_grad():
                        result["ids"] = model.generate(**inputs, max_new_tokens=request.max_tokens,
                                                       pad_token_id=tokenizer.pad_token_id,
                                                       eos_token_id=self.stops or None, streamer=streamer,
                                                       stopping_criteria=StoppingCriteriaList([Cancelled()]),
                                                       **sampling)
                except Exception as exc:  # surfaces below, in the request's thread
                    result["error"] = exc
                    streamer.end()

            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            text_out, finish = "", "length"
            for piece in streamer:
                text_out += piece
                hit = next((s for s in stops if s in text_out), None)
                if hit:
                    piece = piece[: len(piece) - (len(text_out) - text_out.index(hit))]
                    text_out = text_out[: text_out.index(hit)]
                    cancelled.set()
                    finish = "stop"
                if piece:
                    on_text(piece)
                if hit:
                    break
            thread.join()
        if "error" in result:
            raise result["error"]
        new = result["ids"][0, prompt_tokens:]
        if finish != "stop" and any(token in self.stops for token in new.tolist()):
            finish = "stop"
        return {"text": text_out, "finish_reason": finish, "prompt_tokens": prompt_tokens,
                "completion_tokens": int(new.shape[0])}


async def until_done(request: Request, work: asyncio.Future, cancelled: threading.Event) -> dict:
    """Wait for a non-streaming generation; stop it if its client hangs up, so the model is free for the
    next request instead of finishing an answer nobody will read, or if uvicorn cancels this task when
    the drain time after SIGTERM runs out: then the client gets a 503, not a dropped connection."""
    try:
        while not work.done():
            await asyncio.wait({work}, timeout=POLL_SECONDS)
            if not work.done() and await request.is_disconnected():
                cancelled.set()
        return work.result()
    except asyncio.CancelledError:
        raise HTTPException(503, "the server is shutting down") from None
    finally:
        cancelled.set()


def create_app(loaded: LoadedModel, served_name: str, api_key: str | None = None, *,
               max_body_bytes: int = MAX_BODY_BYTES, max_prompt_tokens: int | None = None,
               batching: bool = False, kv_cache_tokens: int = KV_CACHE_TOKENS) -> FastAPI:
    """`max_prompt_tokens` defaults to the model's context. With `batching`, concurrent requests are
    batched continuously (serve/batching.py) in a KV cache of `kv_cache_tokens`."""
    generator = Generator(loaded, max_prompt_tokens)
    batched = None
    if batching:
        from privtune.serve.batching import BatchedGenerator

        batched = BatchedGenerator(generator, kv_cache_tokens)

    @asynccontextmanager
    async def lifespan(app):
        yield
        if batched is not None:
            batched.close()

    app = FastAPI(title="privtune serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.batched = batched
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(ShutdownCancel)  # outside BodyLimit: covers reading the body too

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):  # OpenAI-style 400 instead of FastAPI's 422 detail list
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)  # ours, and starlette's own (404, 405)
    async def http_error(request, exc):
        return _error(exc.status_code, str(exc.detail),
                      "authentication_error" if exc.status_code == 401 else "invalid_request_error")

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # JSON, not plain text; the traceback goes to uvicorn's log only
        return _error(500, f"internal error ({type(exc).__name__}); see the server log", "server_error")

    def authorize(request: Request) -> None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer ...)")

    def check_model(name: str | None) -> None:
        if name not in (None, "", served_name):
            raise HTTPException(404, f"model '{name}' is not served here; this server has '{served_name}'")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        return {"object": "list", "data": [{"id": served_name, "object": "model", "created": 0,
                                            "owned_by": "privtune"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    async def respond(request: Request, body: Sampling, text: str, chat: bool):
        check_model(body.model)
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            inputs = await loop.run_in_executor(None, (batched or generator).prepare, text, body.max_tokens)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        def work(on_text) -> asyncio.Future:
            if batched is not None:
                return asyncio.ensure_future(batched.generate(inputs, body, on_text, cancelled, body.stream))
            return loop.run_in_executor(None, generator.run, inputs, body, on_text, cancelled)

        if not body.stream:
            try:
                out = await until_done(request, work(lambda piece: None), cancelled)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            choice = ({"index": 0, "message": {"role": "assistant", "content": out["text"]}} if chat
                      else {"index": 0, "text": out["text"]})
            return {"id": request_id, "object": "chat.completion" if chat else "text_completion", "created": created,
                    "model": served_name, "choices": [{**choice, "finish_reason": out["finish_reason"]}],
                    "usage": {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["completion_tokens"],
                              "total_tokens": out["prompt_tokens"] + out["completion_tokens"]}}
        queue: asyncio.Queue = asyncio.Queue()

        def push(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("text", piece))

        async def produce():
            try:
                out = await work(push)
                await queue.put(("done", out))
            except Exception as exc:
                await queue.put(("error", str(exc)))

        worker = asyncio.ensure_future(produce())

        def chunk(delta: dict | str, finish: str | None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish} if chat else \
                {"index": 0, "text": delta, "finish_reason": finish}
            return "data: " + json.dumps({"id": request_id, "object": "chat.completion.chunk" if chat
                                          else "text_completion", "created": created, "model": served_name,
                                          "choices": [choice]}) + "\n\n"

        async def events():
            try:
                if chat:
                    yield chunk({"role": "assistant", "content": ""}, None)
                while True:
                    kind, value = await queue.get()
                    if kind == "text":
                        yield chunk({"content": value} if chat else value, None)
                    elif kind == "done":
                        yield chunk({} if chat else "", value["finish_reason"])
                        break
                    else:
                        yield "data: " + json.dumps({"error": {"message": value}}) + "\n\n"
                        break
                yield "data: [DONE]\n\n"
            finally:
                cancelled.set()  # the client went away, or we are done: stop generating
                await asyncio.shield(worker)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request, body: ChatRequest):
        messages = [m.model_dump() for m in body.messages]
        try:
            text = loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:  # the template's raise_exception, e.g. roles that do not alternate
            raise HTTPException(400, f"the model's chat template refused these messages: {exc}") from None
        return await respond(request, body, text, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request, body: CompletionRequest):
        return await respond(request, body, body.prompt, chat=False)

    return app


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; a name or any other address may be reachable from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None, trusted_network: bool) -> str | None:
    """Refuse an unauthenticated server beyond this machine unless told the network is trusted;
    then return the warning to print."""
    if is_loopback(host) or api_key:
        return None
    if not trusted_network:
        raise PrivtuneError(f"serving on {host} without an API key would let anyone who reaches it use the model",
                            field="--host", hint="set PRIVTUNE_SERVE_API_KEY (or --api-key), bind 127.0.0.1, or "
                            "pass --trusted-network if everyone on that network may use it")
    return f"serving on {host} WITHOUT an API key (--trusted-network): anyone who can reach it can use the model"


def check_port(host: str, port: int) -> None:
    """A taken port is a clear error before the model loads, not uvicorn's log line after it."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):  # SO_REUSEADDR, as uvicorn binds
            pass
    except OSError as exc:
        raise PrivtuneError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="--port",
                            hint="another process may hold it: choose another --port") from None


def run_server(app: FastAPI, host: str, port: int) -> None:
    """uvicorn with a bounded shutdown: after SIGTERM, DRAIN_SECONDS for in-flight requests, then their
    tasks are cancelled, which cancels their generations (until_done, the stream's finally)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=DRAIN_SECONDS)
