"""Anthropic HH-RLHF transcripts: {"chosen", "rejected"}, each "\\n\\nHuman: ...\\n\\nAssistant: ..." text;
the turns the two share are the prompt, their last assistant turns the answers."""

import re

from privtune.data.formats import Format, _fail, preference_pair, text_field

SPEAKER = re.compile(r"\n\n(Human|Assistant): ")
ROLES = {"Human": "user", "Assistant": "assistant"}


def transcript(record, data, field):
    text = text_field(record, data, field)
    parts = SPEAKER.split("\n\n" + text.lstrip("\n"))
    if parts[0].strip() or len(parts) < 5:
        raise _fail(record, field, "expected '\\n\\nHuman: ...\\n\\nAssistant: ...' turns")
    messages = [{"role": ROLES[who], "content": said.strip(), "train": False}
                for who, said in zip(parts[1::2], parts[2::2])]
    if messages[-1]["role"] != "assistant" or any(a["role"] == b["role"] for a, b in zip(messages, messages[1:])):
        raise _fail(record, field, "the turns must alternate Human/Assistant and end on the Assistant")
    return messages


def normalize(record, data):
    chosen, rejected = transcript(record, data, "chosen"), transcript(record, data, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise _fail(record, "rejected", "the two transcripts differ before their last Assistant turn")
    answer = lambda messages: [{**messages[-1], "train": True}]
    return preference_pair(record, chosen[:-1], answer(chosen), answer(rejected))


FORMAT = Format(name="hh", keys=frozenset({"chosen", "rejected"}), normalize=normalize, examples="preference",
                order=12, description="chosen, rejected transcripts (Anthropic HH: Human:/Assistant:)")
