"""Which token ids end a generated answer.

`tokenizer.eos_token_id` alone is not enough: many chat models end a turn with a token that is not
the tokenizer's eos (Gemma's `<end_of_turn>`, Llama-3's `<|eot_id|>`, `<|im_end|>` on Qwen2.5 base
tokenizers whose eos is `<|endoftext|>`). Stopping only on eos makes such a model run to the token
limit, which wastes time and drags answers past their end. Generation stops on any of these ids.
"""

from __future__ import annotations


def _as_list(value) -> list:
    """Generation configs hold eos as an int, a list of ints, or None."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def end_of_turn_id(tokenizer) -> int | None:
    """The added token the chat template puts right after the assistant's content, if any.

    Rendering [user "x", assistant "y"] and looking just past the "y" finds the token a model trained
    on this template learned to emit when its answer is done, whatever the template calls it.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    conversation = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except Exception:  # a template that refuses this conversation (e.g. demands a system turn): no guess
        return None
    if not isinstance(text, str) or "y" not in text:
        return None
    rest = text[text.rindex("y") + 1:]
    ids = tokenizer(rest, add_special_tokens=False)["input_ids"] if rest.strip() else []
    first = next((i for i in ids if tokenizer.decode([i]).strip()), None)  # past a space some templates add
    added = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return first if first in added else None


def stop_token_ids(model, tokenizer) -> list[int]:
    """The generation config's eos ids, the tokenizer's eos and the template's end-of-turn token, once each."""
    generation_config = getattr(model, "generation_config", None)
    ids = [*_as_list(getattr(generation_config, "eos_token_id", None)), tokenizer.eos_token_id,
           end_of_turn_id(tokenizer)]
    return [int(i) for i in dict.fromkeys(ids) if i is not None]
