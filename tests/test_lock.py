"""The install is locked: every distribution privtune needs, all the way down, is pinned in
constraints.txt at the version installed here, the one the tests ran with."""

import re
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

EXTRAS = ("test", "demo", "export")


def pins() -> dict[str, Version]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


def needed() -> set[str]:
    """privtune's requirements with the Makefile's extras, and theirs, as installed."""
    todo, seen = [("privtune", EXTRAS)], set()
    while todo:
        name, extras = todo.pop()
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            environment = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environment):
                continue
            key = canonicalize_name(requirement.name)
            if key not in seen:
                seen.add(key)
                todo.append((requirement.name, tuple(requirement.extras)))
    return seen


def test_every_needed_distribution_is_pinned_at_the_installed_version():
    pinned, missing, different = pins(), [], []
    for name in sorted(needed()):
        installed = Version(metadata.version(name))
        if name not in pinned:
            missing.append(name)
        elif Version(installed.public) != pinned[name]:  # torch's +cpu local label is the Makefile's choice
            different.append(f"{name}: installed {installed}, pinned {pinned[name]}")
    assert not missing and not different, (missing, different)
    assert len(pinned) > 50  # the whole tree, not just the direct dependencies
