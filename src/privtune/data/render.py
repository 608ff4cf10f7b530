"""Render schema examples with a chat template and tokenize them with a mask of trained tokens.

The mask is found from the rendered text, not from template markers, so it works with any chat
template: the span of an assistant turn runs from the end of the prompt rendered with
`add_generation_prompt=True` to the end of the conversation rendered through that turn. That span
includes the end-of-turn token, so the model learns to stop.
"""

from __future__ import annotations

import hashlib
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
    if template in NAMED_TEMPLATES:
        return named_template(template)
    path = Path(template)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise PrivtuneError(f"unknown template '{template}'", field="template",
                        hint=f"use 'model', {', '.join(NAMED_TEMPLATES)}, or a path to a .jinja file")


def tokenizer_fingerprint(tokenizer, template: str | None) -> str:
    """A hash of the vocabulary and chat template, so a dataset can't be trained with another tokenizer."""
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    digest.update((template or "").encode())
    return digest.hexdigest()[:16]


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def render_with_spans(tokenizer, template: str, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant turns marked `train`."""
    text = _render(tokenizer, template, messages, False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or not message.get("train", True):
            continue
        prompt = _render(tokenizer, template, messages[:index], True) if index else ""
        through = text if index == len(messages) - 1 else _render(tokenizer, template, messages[: index + 1], False)
        if not text.startswith(prompt) or not text.startswith(through):
            raise PrivtuneError("the chat template does not render conversations prefix by prefix, so the "
                                "trained span cannot be found", field="template",
                                hint="pass --template chatml or a template without history rewriting")
        spans.append((len(prompt), len(through)))
    return text, spans


def tokenize_with_masks(tokenizer, texts: list[str], spans: list[list[tuple[int, int]]]) -> tuple[list, list]:
    """Batch-tokenize rendered texts; a token is trained if it overlaps a trained span."""
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    all_masks = []
    for offsets, example_spans in zip(encoded["offset_mapping"], spans):
        mask = [0] * len(offsets)
        for start, end in example_spans:
            for position, (token_start, token_end) in enumerate(offsets):
                if token_end > start and token_start < end:
                    mask[position] = 1
        all_masks.append(mask)
    return encoded["input_ids"], all_masks
