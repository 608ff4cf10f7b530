"""Prompt/completion pairs: {"prompt", "completion"}."""

from privtune.data.formats import Format, single_turn, text_field


def normalize(record, data):
    return single_turn(text_field(record, data, "prompt"), text_field(record, data, "completion"))


FORMAT = Format(name="prompt_completion", keys=frozenset({"prompt", "completion"}), normalize=normalize,
                description="prompt -> completion")
