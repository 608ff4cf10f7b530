"""Answers of a loaded model to chat prompts, batched: what eval scores and generate --preferences judges."""

from __future__ import annotations

from privtune.models.inference import LoadedModel
from privtune.models.stopping import stop_token_ids
from privtune.ui import track


def following_each_token(follower) -> list:
    """A stopping criterion that never stops, so that `follower` checks the machine's load every token."""
    import torch
    from transformers import StoppingCriteria

    class FollowLoadEachToken(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            follower.follow(int(input_ids.shape[1]))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return [FollowLoadEachToken()] if follower else []


def generate_answers(loaded: LoadedModel, prompts: list[list[dict]], config, follower=None,
                     after_batch=None) -> list[tuple[str, bool]]:
    """Batched generation with left padding; greedy unless a temperature is set. `config` holds the
    sampling settings (temperature, top_p, top_k, max_new_tokens, batch_size, seed): eval's, or
    generate --preferences'.

    Returns each answer and whether it ended on a stop token (rather than the limit). The stop tokens
    include the chat template's end of turn, which is not always the tokenizer's eos (models/stopping.py).
    `after_batch(indices, inputs, cache)`, when given, sees each batch's prompts and the key/value cache
    generation left (eval reuses the prompts' part of it for its held-out loss).
    """
    import torch

    tokenizer = loaded.tokenizer
    stops = stop_token_ids(loaded.model, tokenizer)
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    sampling = {"do_sample": config.temperature > 0}
    if config.temperature > 0:
        sampling.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k or None)
    answers = []
    torch.manual_seed(config.seed)
    for start in track(range(0, len(texts), config.batch_size), f"generating {loaded.name}",
                       total=-(-len(texts) // config.batch_size)):
        batch = tokenizer(texts[start: start + config.batch_size], return_tensors="pt", padding=True,
                          padding_side="left", add_special_tokens=False).to(loaded.model.device)
        with torch.no_grad():
            out = loaded.model.generate(**batch, max_new_tokens=config.max_new_tokens,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=stops or None,
                                        stopping_criteria=following_each_token(follower),
                                        return_dict_in_generate=after_batch is not None, **sampling)
        sequences = out.sequences if after_batch is not None else out
        answers += [until_stop(ids, stops, tokenizer) for ids in sequences[:, batch["input_ids"].shape[1]:]]
        if after_batch is not None:
            after_batch(range(start, start + len(sequences)), batch, out.past_key_values)
    return answers


def until_stop(ids, stops: list[int], tokenizer) -> tuple[str, bool]:
    """The answer up to its first stop token, and whether there was one.

    Cutting there drops the padding that follows in a batch and a stop token that is not marked special
    (decode would keep its text).
    """
    ids = ids.tolist()
    end = next((i for i, token in enumerate(ids) if token in stops), None)
    return tokenizer.decode(ids[:end], skip_special_tokens=True).strip(), end is not None
