"""Render schema examples with a chat template and tokenize them with a mask of trained tokens.

The mask is found from the rendered text, not from template markers, so it works with any chat
template: the span of an assistant turn runs from the end of the prompt rendered with
`add_generation_prompt=True` to the end of the conversation rendered through that turn (less
trailing whitespace). That span includes the end-of-turn token, so the model learns to stop.
"""

from __future__ import annotations

import hashlib
import itertools
from importlib import resources
from pathlib import Path

from privtune.errors import PrivtuneError

NAMED_TEMPLATES = ("chatml", "alpaca")


def named_template(name: str) -> str:
    return resources.files("privtune").joinpath(f"templates/{name}.jinja").read_text(encoding="utf-8")


def choose_template(tokenizer, template: str) -> str:
    """The chat template to render with: the model's own, a named one, or a .jinja file."""
    if template == "model":
        if not tokenizer.chat_template:
            raise PrivtuneError("the model's tokenizer has no chat template", field="template",
                                hint=f"pass --template with one of {', '.join(NAMED_TEMPLATES)} or a .jinja file")
        return tokenizer.chat_template
    return template_text(template, "template", also=("'model'",))


def template_text(template: str, field: str, also: tuple[str, ...] = ()) -> str:
    """A named template's text, or a .jinja file's; `also` names the caller's other choices in the error."""
    if template in NAMED_TEMPLATES:
        return named_template(template)
    path = Path(template)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise PrivtuneError(f"unknown template '{template}'", field=field,
                        hint=f"use {', '.join([*also, *NAMED_TEMPLATES])}, or a path to a .jinja file")


def tokenizer_fingerprint(tokenizer, template: str | None) -> str:
    """A hash of the vocabulary and chat template, so a dataset can't be trained with another tokenizer."""
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    digest.update((template or "").encode())
    return digest.hexdigest()[:16]


def _render(tokenizer, template: str, conversations: list[list[dict]], add_generation_prompt: bool) -> list[str]:
    if not conversations:
        return []
    return tokenizer.apply_chat_template(conversations, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def render_with_spans(tokenizer, template: str, conversations: list[list[dict]]) -> tuple[list[str], list[list]]:
    """Rendered conversations and, for each, the character spans of assistant turns marked `train`.

    Renders in batches (one template call for all conversations, one per prefix depth) because the
    per-call overhead of `apply_chat_template` dominates for short examples.
    """
    texts = _render(tokenizer, template, conversations, False)
    wanted = [(n, i) for n, messages in enumerate(conversations) for i, m in enumerate(messages)
              if m["role"] == "assistant" and m.get("train", True)]
    prompts = _render(tokenizer, template, [conversations[n][:i] for n, i in wanted], True)
    partial = [(n, i) for n, i in wanted if i != len(conversations[n]) - 1]
    throughs = dict(zip(partial, _render(tokenizer, template, [conversations[n][: i + 1] for n, i in partial], False)))
    spans: list[list[tuple[int, int]]] = [[] for _ in conversations]
    for (n, i), prompt in zip(wanted, prompts):
        text = texts[n]
        through = throughs.get((n, i), text)
        if i == 0:
            prompt = ""
        if not text.startswith(prompt) or not text.startswith(through):
            raise PrivtuneError("the chat template does not render conversations prefix by prefix, so the "
                                "trained span cannot be found", field="template",
                                hint="pass --template chatml or a template without history rewriting")
        spans[n].append((len(prompt), len(through.rstrip())))  # the turn's trailing newline is layout
    return texts, spans


def tokenize_with_masks(tokenizer, texts: list[str], spans: list[list[tuple[int, int]]]):
    """Batch-tokenize rendered texts; a token is trained if it overlaps a trained span.

    Returns flat numpy arrays (token ids, 0/1 mask) and the length of each text in tokens: flat
    buffers are cheap to move between processes and straight into Arrow. The Rust tokenizer is
    called directly and span edges map to tokens with `char_to_token`, so the mask costs a few
    calls per turn rather than a loop over every token.
    """
    import numpy as np

    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32,
                      count=int(lengths.sum()))
    mask = np.zeros(len(ids), dtype=np.int8)
    offset = 0
    for encoding, text, example_spans, length in zip(encodings, texts, spans, lengths):
        for start, end in example_spans:
            first = _token_at(encoding, start, len(text), +1)
            last = _token_at(encoding, end - 1, len(text), -1)
            if first is not None and last is not None and last >= first:
                mask[offset + first: offset + last + 1] = 1
        offset += int(length)
    return ids, mask, lengths


def _token_at(encoding, char: int, length: int, step: int) -> int | None:
    """The token holding character `char`, stepping over characters that map to none."""
    while 0 <= char < length:
        token = encoding.char_to_token(char)
        if token is not None:
            return token
        char += step
    return None
