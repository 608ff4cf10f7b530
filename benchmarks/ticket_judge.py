"""A scripted local judge for the ticket task: an OpenAI-compatible chat endpoint on 127.0.0.1, no LLM.

The ticket answers have a checkable truth (JSON with a category and a priority), so a script can judge
them better than a small local model: an answer scores 1 for being a JSON object, 2 more for the
reference's category and 1 more for its priority. It reads privtune's own judge prompts:
- pairwise (eval's and generate --preferences'): "Reference answer:", "Answer A:", "Answer B:" ->
  "Winner: A|B|tie" by the higher score;
- rating (privtune filter's): "Instruction:", "Input:", "Response:" -> "Score: N" on 1-5, from the
  response's own shape (a JSON object with a known category and priority), since a rating has no reference.

    python benchmarks/ticket_judge.py --port 8765     # serves http://127.0.0.1:8765/v1, model "ticket-judge"
"""

from __future__ import annotations

import argparse
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CATEGORIES = {"billing", "refund", "bug", "feature_request", "login", "shipping"}
PRIORITIES = {"low", "medium", "high"}


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


def rating(prompt: str) -> str:
    response = re.search(r"Response:\n(.*?)\n\n(?:Rate|Give)", prompt, re.DOTALL)
    got = labels(response.group(1) if response else "")
    if got is None:
        return "The response is not a JSON object.\nScore: 1"
    known = (got.get("category") in CATEGORIES) + (got.get("priority") in PRIORITIES)
    extra = set(got) - {"category", "priority"}
    points = 3 + known - (1 if extra else 0)
    return f"JSON with {known}/2 known labels{' and extra keys' if extra else ''}.\nScore: {max(1, min(5, points))}"


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
