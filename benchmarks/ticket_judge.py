"""A scripted local judge for the ticket task: an OpenAI-compatible chat endpoint on 127.0.0.1, no LLM.

The ticket answers have a checkable truth (JSON with a category and a priority), so a script can judge
them better than a small local model: an answer scores 1 for being a JSON object, 2 more for the
reference's category and 1 more for its priority. It reads privtune's pairwise judge prompt (eval's and
generate --preferences': "Reference answer:", "Answer A:", "Answer B:") and answers "Winner: A|B|tie" by
the higher score.

    python benchmarks/ticket_judge.py --port 8765     # serves http://127.0.0.1:8765/v1, model "ticket-judge"
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


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "ticket-judge", "object": "model", "owned_by": "script"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = body["messages"][-1]["content"]
        content = pairwise(prompt)
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
