"""Alpaca instructions: {"instruction", "input"?, "system"?, "output"}."""

from privtune.data.formats import Format, single_turn, text_field


def normalize(record, data):
    instruction = text_field(record, data, "instruction")
    extra = text_field(record, data, "input", required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = text_field(record, data, "system", required=False)
    return single_turn(user, text_field(record, data, "output"), system if system.strip() else None)


FORMAT = Format(name="alpaca", keys=frozenset({"instruction", "output"}), normalize=normalize,
                description="instruction, input?, system? -> output (Alpaca)")
