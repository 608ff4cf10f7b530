"""Extension points: one package per kind of thing (data formats, training methods, eval metrics), one
module per entry. A module names its entry in a module attribute (`FORMAT = Format(...)`); the registry
collects them, so adding a format, a method or a metric is adding one file to its package.

Nothing registers itself at import time and nothing is mutated after loading: `entries` reads the
package once (cached) and returns the same mapping every time.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from privtune.errors import PrivtuneError


@functools.cache
def entries(package: str, attribute: str) -> dict[str, Any]:
    """Every entry of `package` by name: the `attribute` of each public module, in `order`, then name."""
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            found.append(getattr(importlib.import_module(f"{package}.{info.name}"), attribute))
    found.sort(key=lambda entry: (getattr(entry, "order", 0), entry.name))
    names = [entry.name for entry in found]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise RuntimeError(f"{package}: more than one entry named {', '.join(duplicated)}")
    return {entry.name: entry for entry in found}


def names(package: str, attribute: str) -> list[str]:
    return list(entries(package, attribute))


def lookup(package: str, attribute: str, name: str, *, what: str, field: str | None = None) -> Any:
    """The entry called `name`, or an error that lists the known ones."""
    known = entries(package, attribute)
    if name not in known:
        raise PrivtuneError(f"unknown {what} '{name}'", field=field, hint=f"one of: {', '.join(known)}")
    return known[name]
