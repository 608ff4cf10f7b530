"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted answers and injectable faults.

No LLM runs here: each chat request gets a numbered batch of distinct made-up tasks. `faults` is a
queue of what the next requests get instead: an HTTP status, "timeout" (answer after the client
gave up), "echo_auth" (a 400 quoting the request's headers), "malformed" (no choices), "empty" (empty content), "truncated" (finish_reason length).
`requests` counts every request that reached it; with `hold = n`, requests after the n-th wait unanswered
until `hold` is set back to None (a run frozen with requests in flight); `repeat` answers every request
with the same batch (a teacher that keeps repeating itself).
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections import deque

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

WORDS = ("ticket refund invoice login password order parcel shipping crash screen export plan charge team customer "
         "account billing address tracking update android email reset dashboard report widget import yearly monthly "
         "urgent delay return warranty discount coupon upgrade downgrade cancel renew receipt payment card bank "
         "transfer fraud security privacy settings profile notification language timezone mobile desktop browser "
         "cache cookie session token error timeout latency outage backup restore sync calendar contact").split()
VERBS = "Explain Summarize Classify Describe Compare List Rewrite Suggest Estimate Draft Identify Outline".split()


class FakeTeacher:
    def __init__(self, tasks_per_response: int = 5, model: str = "teacher-1", latency: float = 0.0):
        self.tasks_per_response, self.model, self.latency = tasks_per_response, model, latency
        self.faults: deque = deque()
        self.requests = 0
        self.hold: int | None = None
        self.repeat = False
        self.auth_header_seen: list[str] = []
        self.rng = random.Random(0)
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)
        self.app.get("/v1/models")(self.models)
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def task_text(self, number: int) -> str:
        words = " ".join(self.rng.sample(WORDS, 6))
        verb = self.rng.choice(VERBS)
        return (f"###\n{number}. Instruction: {verb} the {words}.\n{number}. Input:\n<noinput>\n"
                f"{number}. Output:\nAnswer about {words}.")

    async def models(self):
        self.requests += 1
        return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]}

    async def chat(self, request: Request):
        self.requests += 1
        number = self.requests
        while self.hold is not None and number > self.hold:
            await asyncio.sleep(0.02)
        self.auth_header_seen.append(request.headers.get("authorization", ""))
        body = await request.json()
        if body.get("model") != self.model:
            return JSONResponse({"error": {"message": f"model {body.get('model')} not found"}}, status_code=404)
        fault = self.faults.popleft() if self.faults else None
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "echo_auth":  # a careless server that quotes the request back in its error
            message = f"bad request: {dict(request.headers)}"
            return JSONResponse({"error": {"message": message}}, status_code=400)
        if isinstance(fault, int):
            return JSONResponse({"error": {"message": f"scripted {fault}"}}, status_code=fault)
        if fault == "timeout":
            await asyncio.sleep(3)
        if self.repeat:
            self.rng.seed(0)
        content = "\n".join(self.task_text(i + 4) for i in range(self.tasks_per_response))
        choices = [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
        if fault == "malformed":
            choices = []
        elif fault == "empty":
            choices[0]["message"]["content"] = ""
        elif fault == "truncated":
            choices[0]["message"]["content"] = content[: len(content) - 15]
            choices[0]["finish_reason"] = "length"
        return {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model, "choices": choices,
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.hold = None
        self.server.should_exit = True
        self.thread.join(timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
