"""Shared-prefix training: a batch whose rows all begin with the same tokens runs that prefix once.

Instruction data is templated: every row of the demo's tickets starts with the same system prompt and
instruction (about half of each row's 77 tokens), and any chat data starts with its template's system
turn. The prefix's hidden states do not depend on what follows it (causal attention), so the backbone
runs it once for one row, its key/value cache is repeated for the batch, and the rest of each row runs
on that cache. Gradients from every row flow back through the repeat into the one prefix pass, so the
loss and gradients are those of the full batch (up to float rounding; tests/train/test_shared_prefix.py);
only the work is smaller.

It applies only where that equality holds: a plain padded batch of token ids (not packed, no position
ids or embeddings passed in), a model without active dropout (one dropout mask would be shared across
rows), no gradient checkpointing (which turns the cache off), and a dynamic cache (full or sliding
attention). Anything else runs the usual single pass.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

MIN_PREFIX = 8
"""Shorter shared prefixes are not worth a second pass through the layers."""

PASSED_THROUGH = {"input_ids", "attention_mask", "use_cache", "return_dict"}


def shared_prefix_length(input_ids, attention_mask) -> int:
    """How many leading tokens every row has in common, all of them real (not padding); at most the
    row length less one, so that each row keeps a token of its own to run."""
    import torch

    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    differs = torch.nonzero(~same)
    length = int(differs[0]) if len(differs) else input_ids.shape[1]
    return min(length, input_ids.shape[1] - 1)


def has_dropout(model) -> bool:
    """Whether any dropout would act in training (modules, or attention dropout from the config)."""
    import torch

    if any(isinstance(module, torch.nn.Dropout) and module.p > 0 for module in model.modules()):
        return True
    config = getattr(model, "config", None)
    return any(getattr(config, name, 0) or 0 for name in ("attention_dropout", "attn_pdrop", "hidden_dropout"))


def prefix_once(backbone):
    """A forward for `backbone` (the decoder stack that returns `last_hidden_state`) that runs a shared
    prefix once; anything it cannot do that way goes to the original forward."""
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer
    from transformers.modeling_outputs import BaseModelOutputWithPast

    original = backbone.forward
    parameters = list(inspect.signature(original).parameters)
    cache_name = "cache" if "cache" in parameters else "past_key_values"

    def forward(*args, **kwargs):
        if len(args) == 1 and parameters[:1] == ["input_ids"] and "input_ids" not in kwargs:
            args, kwargs = (), {"input_ids": args[0], **kwargs}  # as sequence-classification heads call it
        given = {name: value for name, value in kwargs.items() if value is not None}
        input_ids, attention_mask = given.get("input_ids"), given.get("attention_mask")
        if args or input_ids is None or set(given) - PASSED_THROUGH:
            return original(*args, **kwargs)
        length = shared_prefix_length(input_ids, attention_mask)
        if length < MIN_PREFIX:
            return original(*args, **kwargs)
        rows = input_ids.shape[0]
        cache = DynamicCache(config=backbone.config)  # its layers follow the config's attention types
        if not all(type(layer) is DynamicLayer or getattr(layer, "is_sliding", False) for layer in cache.layers):
            return original(*args, **kwargs)
        prefix = original(input_ids=input_ids[:1, :length], use_cache=True, **{cache_name: cache})
        cache.batch_repeat_interleave(rows)
        rest = original(input_ids=input_ids[:, length:], attention_mask=attention_mask, use_cache=True,
                        **{cache_name: cache})
        hidden = torch.cat([prefix.last_hidden_state.expand(rows, -1, -1), rest.last_hidden_state], dim=1)
        return BaseModelOutputWithPast(last_hidden_state=hidden)

    return forward


def backbone_of(model):
    """The decoder stack under PEFT and accelerate wrappers: the module TRL's fused head calls."""
    inner = model.module if hasattr(model, "module") else model
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return getattr(inner, "base_model", None)


@contextmanager
def shared_prefix(model, enabled: bool = True):
    """Run shared prefixes once while the block runs, where that gives the same loss (module docstring).
    The caller turns it off under gradient checkpointing, which runs without a cache."""
    backbone = backbone_of(model)
    usable = (enabled and backbone is not None and backbone is not model
              and not getattr(model.config if hasattr(model, "config") else backbone.config, "is_encoder_decoder", False)
              and not (model.training and has_dropout(model)))
    if not usable:
        yield
        return
    own_forward = backbone.__dict__.get("forward")
    backbone.forward = prefix_once(backbone)
    try:
        yield
    finally:
        if own_forward is None:
            del backbone.forward
        else:
            backbone.forward = own_forward
