"""Formats come from the registry, one module each; detection prefers the most specific."""

import pytest

from privtune import registry
from privtune.config import build_config
from privtune.data.formats import (PACKAGE, Format, RawRecord, detect_format, format_names, formats, normalize,
                                   pick_format)
from privtune.errors import PrivtuneError

TODAY = ["openai", "sharegpt", "alpaca", "dolly", "prompt_completion"]


def fake(name, *keys):
    return Format(name=name, keys=frozenset(keys), normalize=lambda record, data: [], description=name)


def test_the_package_holds_todays_formats_in_their_help_order():
    """A new format is one more file in the package; today's keep their order (the help and detection use it)."""
    names = list(registry.entries(PACKAGE, "FORMAT"))
    assert names == format_names() and [n for n in names if n in TODAY] == TODAY


@pytest.mark.parametrize("name", format_names())
def test_every_format_says_what_it_is(name):
    found = formats()[name]
    assert found.name == name and found.keys and all(isinstance(k, str) for k in found.keys)
    assert found.description.strip() and callable(found.normalize)


def test_a_format_whose_keys_extend_another_wins():
    pairs, kto = fake("prompt_completion", "prompt", "completion"), fake("kto", "prompt", "completion", "label")
    for order in ([pairs, kto], [kto, pairs]):
        assert pick_format({"prompt", "completion", "label", "id"}, order) is kto
        assert pick_format({"prompt", "completion"}, order) is pairs
    assert pick_format({"prompt"}, [pairs, kto]) is None


def test_unrelated_matches_go_by_registry_order():
    first, second = fake("a", "x"), fake("b", "y", "z")
    assert pick_format({"x", "y", "z"}, [first, second]) is first
    assert pick_format({"x", "y", "z"}, [second, first]) is second


@pytest.mark.parametrize("keys, fmt", [
    ({"messages"}, "openai"), ({"conversations"}, "sharegpt"), ({"instruction", "output"}, "alpaca"),
    ({"instruction", "response"}, "dolly"), ({"prompt", "completion"}, "prompt_completion"),
    # records carrying two formats' keys: the precedence of the old if/elif chain
    ({"messages", "conversations"}, "openai"), ({"messages", "instruction", "output"}, "openai"),
    ({"conversations", "prompt", "completion"}, "sharegpt"), ({"instruction", "output", "response"}, "alpaca"),
    ({"instruction", "response", "prompt", "completion"}, "dolly"),
])
def test_detection_matches_the_old_precedence(keys, fmt):
    assert detect_format(RawRecord(dict.fromkeys(keys, "x"), "f.jsonl", 1)) == fmt


def test_unknown_format_lists_the_registered_ones():
    with pytest.raises(PrivtuneError) as info:
        normalize(RawRecord({"q": "a"}, "f.jsonl", 1), "no_such_format")
    assert info.value.field == "--format" and info.value.hint == "one of: auto, " + ", ".join(format_names())


def test_prep_config_takes_only_registered_formats():
    from privtune.data.dataset import PrepConfig

    assert build_config(PrepConfig, {"format": "dolly"}, source="r.yaml").format == "dolly"
    with pytest.raises(PrivtuneError) as info:
        build_config(PrepConfig, {"format": "no_such_format"}, source="r.yaml", lines={"format": 3})
    assert info.value.field == "format" and info.value.line == 3
    assert "expected one of 'auto', 'openai'" in str(info.value) and "got 'no_such_format'" in str(info.value)
