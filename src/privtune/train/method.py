"""What a training method is: one `Method` per module of `privtune.train.methods`.

A method says what the base model is loaded as, which PEFT adapter (if any) wraps it, which trainer
runs it, what the dataset must hold, and whether the result can be merged; its own recipe keys are
a settings model under its section. Train reads only this, never the method's name, so adding one
(DPO, ORPO, ...) is one new file in `privtune/train/methods/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from privtune import registry

PACKAGE = "privtune.train.methods"


def _nothing(*_: Any) -> None:
    return None


def _unchanged(model, _config):
    return model


def sft_trainer(model, tokenizer, adapter, dataset, config, args: dict, callbacks):
    """The supervised trainer for the model's kind: TRL's SFTTrainer, or Seq2SeqTrainer for T5."""
    if model.config.is_encoder_decoder:
        from privtune.train.seq2seq import build_trainer
    else:
        from privtune.train.sft_trainer import build_trainer
    return build_trainer(model, tokenizer, adapter, dataset, config, args, callbacks)


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    adapter: bool
    """True: the artifact holds an adapter over the base model; False: full weights."""
    order: int = 0
    """Position in lists and help."""
    mergeable: bool = True
    """An adapter that folds into the base weights (`--merge`, export)."""
    examples: str = "sft"
    """The kind of examples the dataset must hold (sft: conversations with trained-token masks)."""
    head: str = "lm"
    """What the model outputs: lm (next-token logits, a chat model) or score (one scalar per sequence: a
    reward model, loaded with a fresh one-output classification head)."""
    settings: type | None = None
    """The method's own recipe keys (a privtune.config.Config model), under `section`."""
    section: str | None = None
    load_kwargs: Callable[[Any, Any], dict] = lambda config, dtype: {}
    """Extra `from_pretrained` arguments (a quantization config), given the recipe and torch dtype."""
    prepare: Callable[[Any, Any], Any] = _unchanged
    """The loaded base model made ready to train (e.g. k-bit preparation)."""
    peft_config: Callable[[Any, Any, Any], Any] = _nothing
    """(recipe, model, PEFT task type) -> the PEFT config, or None to train the weights themselves."""
    build_trainer: Callable = sft_trainer
    """(model, tokenizer, peft config, dataset artifact, recipe, trainer arguments, callbacks) -> trainer."""


def methods() -> dict[str, Method]:
    return registry.entries(PACKAGE, "METHOD")


def method_of(name: str) -> Method:
    return registry.lookup(PACKAGE, "METHOD", name, what="training method", field="method")
