"""Parse a teacher's numbered batch of tasks, and filter them the way Alpaca does."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TASK = re.compile(r"^\s*(\d+)\.\s*Instruction:\s*(.*?)\s*\n\s*\1\.\s*Input:\s*(.*?)\s*\n\s*\1\.\s*Output:\s*(.*?)\s*$",
                   re.DOTALL)
_TASK_MARKER = re.compile(r"^\s*\d+\s*\.\s*(Instruction|Input|Output)\s*:", re.MULTILINE | re.IGNORECASE)
"""A line that opens a numbered task field: inside a parsed field it means two tasks ran together
(the teacher left out the `###` between them), so the block is not one task."""
DEFAULT_BLOCKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                     "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]


@dataclass
class Task:
    instruction: str
    input: str
    output: str


def parse_tasks(text: str, truncated: bool) -> tuple[list[Task], int]:
    """Tasks in `text` and how many blocks failed to parse; a truncated last block is dropped."""
    blocks = [b for b in text.split("###") if b.strip()]
    if truncated and blocks:
        blocks = blocks[:-1]
    tasks, unparsed = [], 0
    for block in blocks:
        match = _TASK.match(block)
        if not match:
            unparsed += 1
            continue
        _, instruction, extra, output = match.groups()
        extra = "" if extra.strip().lower() in ("<noinput>", "<no input>", "none", "") else extra.strip()
        tasks.append(Task(instruction.strip(), extra, output.strip()))
    return tasks, unparsed


def rejection_reason(task: Task, min_words: int, max_words: int, blocklist: list[str]) -> str | None:
    """Why Alpaca's filters would drop this task, or None to keep it."""
    if any(_TASK_MARKER.search(text) for text in (task.instruction, task.input, task.output)):
        return "merged_tasks"  # "1. Output: Hi!\n2. Instruction: ...": Alpaca's parser drops these too
    words = task.instruction.split()
    if len(words) < min_words:
        return "too_short"
    if len(words) > max_words:
        return "too_long"
    if not task.output.strip():
        return "empty_output"
    lowered = task.instruction.lower()
    if any(re.search(rf"\b{re.escape(word)}\b", lowered) for word in blocklist):
        return "blocklist"
    if lowered.startswith("write a program") or not task.instruction[0].isascii() \
            or not task.instruction[0].isalpha():
        return "non_text"
    return None
