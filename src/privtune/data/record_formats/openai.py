"""OpenAI chat fine-tuning records: {"messages": [{"role", "content", "weight"?}, ...]}."""

from privtune.data.formats import ROLES, Format, check_conversation, turns


def normalize(record, data):
    messages = turns(record, data.get("messages"), "messages", "role", "content", {r: r for r in ROLES})
    return check_conversation(record, messages, "messages")


FORMAT = Format(name="openai", keys=frozenset({"messages"}), normalize=normalize, order=-1,
                description="messages: [{role, content, weight?}, ...] (OpenAI chat fine-tuning)")
