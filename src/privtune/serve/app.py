"""`privtune serve`: one model behind an OpenAI-compatible API (FastAPI + uvicorn).

transformers' own `transformers serve` needs the request's model to be the exact path and does not
apply a PEFT adapter, so privtune serves with a small FastAPI app: /v1/models, /v1/chat/completions
(with streaming), /v1/completions, optional bearer-token auth. Generation runs one request at a
time in a worker thread (the model is not thread-safe); requests queue. Bad requests get a 4xx with
a message; a client that hangs up mid-stream stops its generation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from privtune.models.inference import LoadedModel
from privtune.models.stopping import stop_token_ids


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


class Generator:
    """Runs generate() one request at a time, streaming text pieces through a queue.

    Generation stops on any of the model's stop tokens: the chat template's end of turn as well as the
    tokenizer's eos, which differ for many chat models (models/stopping.py).
    """

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.lock = threading.Lock()
        self.stops = stop_token_ids(loaded.model, loaded.tokenizer)

    def encode(self, text: str):
        return self.loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.loaded.model.device)

    def run(self, text: str, request: Sampling, on_text, cancelled: threading.Event) -> dict:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        inputs = self.encode(text)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit and inputs["input_ids"].shape[1] + request.max_tokens > limit:
            raise ValueError(f"prompt ({inputs['input_ids'].shape[1]} tokens) + max_tokens exceeds the model's "
                             f"context of {limit}")

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancelled.is_set()

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": request.temperature > 0}
        if request.temperature > 0:
            sampling.update(temperature=request.temperature, top_p=request.top_p)
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        with self.lock:
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
        new = result["ids"][0, inputs["input_ids"].shape[1]:]
        if finish != "stop" and any(token in self.stops for token in new.tolist()):
            finish = "stop"
        return {"text": text_out, "finish_reason": finish, "prompt_tokens": int(inputs["input_ids"].shape[1]),
                "completion_tokens": int(new.shape[0])}


def create_app(loaded: LoadedModel, served_name: str, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="privtune serve", docs_url=None, redoc_url=None)
    generator = Generator(loaded)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):  # OpenAI-style 400 instead of FastAPI's 422 detail list
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return _error(exc.status_code, str(exc.detail),
                      "authentication_error" if exc.status_code == 401 else "invalid_request_error")

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
        if not body.stream:
            try:
                out = await loop.run_in_executor(None, generator.run, text, body, lambda piece: None, cancelled)
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
                out = await loop.run_in_executor(None, generator.run, text, body, push, cancelled)
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
        text = loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return await respond(request, body, text, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request, body: CompletionRequest):
        return await respond(request, body, body.prompt, chat=False)

    return app
