"""Console output shared by stages: progress bars and tables on stderr, results on stdout."""

from __future__ import annotations

from typing import Iterable, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True, highlight=False)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    with progress_bar() as bar:
        yield from bar.track(items, total=total, description=description)


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and deprecation chatter; privtune shows its own.
    datasets reads its switch when it is imported, so eval and serve need not import it to silence it."""
    import os
    import sys
    import warnings

    import transformers

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
