"""TRL's preference records: {"prompt", "chosen", "rejected"}, each a string or a list of turns."""

from privtune.data.formats import Format, answer_turns, preference_pair, prompt_turns


def normalize(record, data):
    return preference_pair(record, prompt_turns(record, data, "prompt"), answer_turns(record, data, "chosen"),
                           answer_turns(record, data, "rejected"))


FORMAT = Format(name="trl_preference", keys=frozenset({"prompt", "chosen", "rejected"}), normalize=normalize,
                examples="preference", order=10, description="prompt, chosen, rejected (TRL preference: text or turns)")
