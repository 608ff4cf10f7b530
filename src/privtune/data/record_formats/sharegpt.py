"""ShareGPT conversations: {"conversations": [{"from": "human"|"gpt"|..., "value"}, ...]}."""

from privtune.data.formats import Format, check_conversation, turns

ROLES = {"system": "system", "human": "user", "user": "user",
         "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant"}


def normalize(record, data):
    messages = turns(record, data.get("conversations"), "conversations", "from", "value", ROLES)
    return check_conversation(record, messages, "conversations")


FORMAT = Format(name="sharegpt", keys=frozenset({"conversations"}), normalize=normalize, order=-1,
                description="conversations: [{from: human|gpt|system, value}, ...] (ShareGPT)")
