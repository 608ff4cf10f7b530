"""How generate asks a teacher for examples: the `Style` each module of privtune/generate/styles/ declares.

A style turns "what to show" into requests and the teacher's answers into tasks; everything around it
(the privacy guard, egress log and budget, retries, filters, near-duplicates, resume, the dataset) is
the stage's and the same for every style. Adding a style is adding one module to that package.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from privtune import registry

if TYPE_CHECKING:
    from privtune.generate.parse import Task

STYLES = "privtune.generate.styles"


@dataclass
class Reply:
    """What one unit of work (one or more HTTP requests) got from the teacher."""

    tasks: list[Task] = field(default_factory=list)
    unparsed: int = 0
    """Answers or blocks that did not give a task (counted beside the parsed ones: the parsed share)."""
    malformed: bool = False
    truncated: bool = False
    calls: int = 1
    """HTTP requests this unit took once answered (retries aside)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_id: str | None = None
    rejected: Counter = field(default_factory=Counter)
    """Drops decided before the filters (e.g. an instruction cut off at the token limit), by reason."""


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    prepare: Callable[..., Any]
    """(context: stage.StyleContext) -> a Plan: what each request shows and how it is asked."""
    order: int = 0
    reads: tuple[str, ...] = ("seeds", "docs")
    """The sources the style can use: seeds, docs, none (seed-free)."""


@dataclass
class Plan:
    """A prepared style: `build(kept) -> Prompt` picks what the next unit shows; `ask(clients, prompt)` sends it."""

    build: Callable[[list[dict]], Any]
    ask: Callable[[Any, Any], Awaitable[Reply]]
    template: str
    """The text every request is built from (its hash is part of the dataset's id)."""
    describe: Callable[[], str]
    """What each request shows, for the remote-teacher warning."""
    dry_prompt: Callable[[], str]
    """One rendered request, for --dry-run."""
    items_shown: int = 0
    """How many of the user's seeds or chunks the requests may show (0: none leaves the machine)."""
    redactions: Callable[[], int] = lambda: 0
    route: str = "chat/completions"
    """The routes it posts to, for --dry-run."""


def styles() -> dict[str, Style]:
    return registry.entries(STYLES, "STYLE")


def lookup(name: str) -> Style:
    return registry.lookup(STYLES, "STYLE", name, what="generation style", field="style")


def usage(response) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI-style response, 0 where it reports none."""
    found = getattr(response, "usage", None)
    if found is None:
        return 0, 0
    return found.prompt_tokens or 0, found.completion_tokens or 0
