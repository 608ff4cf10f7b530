"""A scripted local judge: an OpenAI-compatible chat endpoint on 127.0.0.1, no LLM, for the benchmarks where
the demo's 135M model cannot judge (it never ended a rating with a score: benchmarks/results.md).

- Pairwise (eval's and generate --preferences' prompt: "Reference answer:", "Answer A:", "Answer B:"), for
  the ticket task, whose answers have a checkable truth: an answer scores 1 for being a JSON object, 2 more
  for the reference's category and 1 more for its priority; "Winner: A|B|tie" by the higher score.
- Rating (filter's prompt: "Request:", "Response:"), by the flaws a small teacher's generated examples show:
  a response that refuses or talks about itself as a chatbot scores 1, one that repeats the request or has
  under 5 words 2, one under 20 words 3, else 4; a request under 4 words loses a point. "Score: N".

    python benchmarks/scripted_judge.py --port 8765     # serves http://127.0.0.1:8765/v1, any model name
"""

from __future__ import annotations

import argparse
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def labels(text: str) -> dict | None:
    """The first JSON object in an answer, or None."""
    match = re.search(r"\{.*?\}", text or "", re.DOTALL)
    try:
        value = json.loads(match.group(0)) if match else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def score(answer: str, reference: str) -> int:
    """0-4: JSON object (1), the reference's category (2), its priority (1)."""
    got, want = labels(answer), labels(reference) or {}
    if got is None:
        return 0
    return 1 + 2 * (got.get("category") == want.get("category")) + (got.get("priority") == want.get("priority"))


def pairwise(prompt: str) -> str:
    reference = re.search(r"Reference answer:\n(.*?)\n\nAnswer A:", prompt, re.DOTALL).group(1)
    a = re.search(r"Answer A:\n(.*?)\n\nAnswer B:", prompt, re.DOTALL).group(1)
    b = re.search(r"Answer B:\n(.*?)\n\nGive one", prompt, re.DOTALL).group(1)
    score_a, score_b = score(a, reference), score(b, reference)
    winner = "A" if score_a > score_b else "B" if score_b > score_a else "tie"
    return f"A scores {score_a}/4 and B {score_b}/4 against the reference's labels.\nWinner: {winner}"


REFUSAL = re.compile(r"\b(I'm sorry|I am sorry|as an? (AI|chatbot|language model)|I (can't|cannot|don't have the "
                     r"(ability|capability))|I'm (unable|not able)|helpful AI|trained by)", re.IGNORECASE)


def rating(prompt: str) -> str:
    request = re.search(r"Request:\n(.*?)\n\nResponse:", prompt, re.DOTALL).group(1).strip()
    response = re.search(r"Response:\n(.*?)\n\nGive one", prompt, re.DOTALL).group(1).strip()
    words = len(response.split())
    if REFUSAL.search(response):
        score, why = 1, "The response refuses or talks about itself instead of answering."
    elif response.lower() == request.lower() or words < 5:
        score, why = 2, "The response repeats the request or says almost nothing."
    elif words < 20:
        score, why = 3, "The response is short."
    else:
        score, why = 4, "The response addresses the request at length."
    if len(request.split()) < 4:
        score, why = max(1, score - 1), why + " The request is too short to be clear."
    return f"{why}\nScore: {score}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "ticket-judge", "object": "model", "owned_by": "script"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = body["messages"][-1]["content"]
        content = pairwise(prompt) if "Answer B:" in prompt else rating(prompt)
        self.server.requests += 1
        self._send({"id": f"j-{self.server.requests}", "object": "chat.completion", "created": 0,
                    "model": "ticket-judge", "choices": [{"index": 0, "finish_reason": "stop",
                                                          "message": {"role": "assistant", "content": content}}]})

    def _send(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.requests = 0
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    serve(parser.parse_args().port).serve_forever()
