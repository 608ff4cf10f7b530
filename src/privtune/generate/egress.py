"""What leaves the machine, written down before it leaves.

Every HTTP request to the teacher (the clients' retries and the model-list lookup included) first
appends a line to `egress.jsonl` in the staging directory, flushed and fsynced, and only then goes
out. A run killed with `kill -9` has therefore lost no record of what it sent; the resumed run appends
to the same file, and the manifest's `egress.requests` is its line count. (A kill between the line and
the send counts a request that never left: the count can be one too high per request in flight,
never too low.) A line holds a time and a size, never what was sent.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

EGRESS_LOG = "egress.jsonl"


class BudgetSpent(Exception):
    """Raised instead of sending a request past `--max-requests`; neither client retries it."""


def complete_lines(path: Path) -> bytes:
    """The file's whole lines; a torn last line (killed mid-write) is cut off the file too."""
    if not path.exists():
        return b""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    return complete


class EgressLog:
    """`record(size)` before each request leaves; `sent` and `bytes` count this run and the runs it resumes."""

    def __init__(self, path: Path, max_requests: int = 0):
        lines = complete_lines(path).splitlines()
        self.sent = len(lines)
        self.bytes = sum(json.loads(line)["bytes"] for line in lines)
        self.max_requests = max_requests
        self.handle = open(path, "ab")

    def spent(self) -> bool:
        return 0 < self.max_requests <= self.sent

    def record(self, size: int) -> None:
        if self.spent():
            raise BudgetSpent(f"--max-requests {self.max_requests} reached")
        self.handle.write(json.dumps({"time": round(time.time(), 3), "bytes": size}).encode() + b"\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.sent += 1
        self.bytes += size

    def close(self) -> None:
        self.handle.close()
