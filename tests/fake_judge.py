"""A local OpenAI-compatible judge: prefers the answer that is valid JSON; once answers off-format."""

from __future__ import annotations

import json
import re

from fastapi import Request
from fastapi.responses import JSONResponse

from tests.fake_teacher import FakeTeacher


class FakeJudge(FakeTeacher):
    def __init__(self):
        super().__init__(model="judge-1")
        self.app.router.routes = [r for r in self.app.router.routes if getattr(r, "path", "") != "/v1/chat/completions"]
        self.app.post("/v1/chat/completions")(self.judge)

    async def judge(self, request: Request):
        self.requests += 1
        self.auth_header_seen.append(request.headers.get("authorization", ""))
        text = (await request.json())["messages"][0]["content"]
        a = re.search(r"Answer A:\n(.*?)\n\nAnswer B:", text, re.DOTALL).group(1)
        verdict = "Winner: A" if _is_json(a) else "Winner: B"
        if self.requests == 3:
            verdict = "Both are fine I guess"
        return {"id": f"j-{self.requests}", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Reasoning.\n{verdict}"},
                             "finish_reason": "stop"}]}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


class FakeRater(FakeTeacher):
    """A local rater: 5 for a response that is JSON, 2 for one that is not, no score for one with '???'.
    `fail` holds request numbers answered with HTTP 500 instead."""

    def __init__(self):
        super().__init__(model="rater-1")
        self.fail: set[int] = set()
        self.app.router.routes = [r for r in self.app.router.routes if getattr(r, "path", "") != "/v1/chat/completions"]
        self.app.post("/v1/chat/completions")(self.rate)

    async def rate(self, request: Request):
        self.requests += 1
        if self.requests in self.fail:
            return JSONResponse({"error": {"message": "scripted 500"}}, status_code=500)
        text = (await request.json())["messages"][0]["content"]
        response = re.search(r"Response:\n(.*?)\n\nGive one", text, re.DOTALL).group(1)
        verdict = "I cannot tell." if "???" in response else "JSON.\nScore: 5" if _is_json(response) else \
            "Not JSON.\nScore: 2"
        return {"id": f"r-{self.requests}", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}]}
