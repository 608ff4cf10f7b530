"""OpenAI preference fine-tuning records: {"input": {"messages": [...]}, "preferred_output": [assistant turn],
"non_preferred_output": [assistant turn]}."""

from privtune.data.formats import Format, _fail, answer_turns, preference_pair, prompt_turns


def normalize(record, data):
    given = data.get("input")
    if not isinstance(given, dict):
        raise _fail(record, "input", f"expected an object with messages, got {type(given).__name__}")
    return preference_pair(record, prompt_turns(record, {"input.messages": given.get("messages")}, "input.messages"),
                           answer_turns(record, data, "preferred_output"),
                           answer_turns(record, data, "non_preferred_output"), field="non_preferred_output")


FORMAT = Format(name="openai_preference", keys=frozenset({"input", "preferred_output", "non_preferred_output"}),
                normalize=normalize, examples="preference", order=11,
                description="input.messages, preferred_output, non_preferred_output (OpenAI preference fine-tuning)")
