"""Dolly instructions: {"instruction", "context"?, "response"}."""

from privtune.data.formats import Format, single_turn, text_field


def normalize(record, data):
    instruction = text_field(record, data, "instruction")
    context = text_field(record, data, "context", required=False)
    user = f"{instruction}\n\n{context}" if context.strip() else instruction
    return single_turn(user, text_field(record, data, "response"))


FORMAT = Format(name="dolly", keys=frozenset({"instruction", "response"}), normalize=normalize,
                description="instruction, context? -> response (Dolly)")
