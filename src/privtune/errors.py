"""User-facing errors: where the problem is (file, line, field) and what to do about it."""

from __future__ import annotations


class PrivtuneError(Exception):
    """An error caused by input or setup, shown to the user without a traceback.

    `source`, `line` and `field` locate the problem so the user can open the file and fix it.
    """

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        self.hint = hint

    def location(self) -> str:
        parts = []
        if self.source is not None:
            parts.append(str(self.source) + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}\n  hint: {self.hint}" if self.hint else text
