"""LoRA: low-rank adapters on the chosen linear layers; the base stays frozen."""

from __future__ import annotations

from pydantic import Field, model_validator

from privtune.config import CommaList, Config, ConfigValueError
from privtune.errors import PrivtuneError
from privtune.train.method import Method


class LoraSettings(Config):
    r: int = 16
    """Rank of the low-rank update."""
    alpha: int = 32
    """Scaling: the update is multiplied by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter input during training. 0 by default, as in LLaMA-Factory and unsloth: on
    a CPU, drawing the dropout masks was a quarter of a LoRA step (make bench, train rows)."""
    target_modules: CommaList = Field(default_factory=lambda: ["all-linear"])
    """Module names to adapt; `all-linear` adapts every linear layer but the output head."""
    modules_to_save: CommaList = Field(default_factory=list)
    """Modules trained in full beside the adapters, e.g. [embed_tokens, lm_head] when the chat
    template's special tokens are new to the base model."""

    @model_validator(mode="after")
    def check(self):
        if self.r < 1:
            raise ConfigValueError("r", f"must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ConfigValueError("dropout", f"must be in [0, 1), got {self.dropout}")
        return self


def lora_config(config, model, task):
    """The PEFT LoraConfig of the recipe's `lora` section; named target modules must exist in the model."""
    from peft import LoraConfig

    targets = config.lora.target_modules
    target = "all-linear" if targets == ["all-linear"] else list(targets)
    if target != "all-linear":
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = sorted(set(target) - names)
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if type(m).__name__ in ("Linear", "Linear4bit")})
            raise PrivtuneError(f"the model has no modules named {', '.join(missing)}",
                                field="lora.target_modules", hint=f"its linear layers: {', '.join(linear)}")
    return LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=target, task_type=task,
                      modules_to_save=list(config.lora.modules_to_save) or None,  # PEFT extends it in place
                      ensure_weight_tying=bool(config.lora.modules_to_save)
                      and bool(getattr(model.config, "tie_word_embeddings", False)))


METHOD = Method(name="lora", order=1, adapter=True, settings=LoraSettings, section="lora", peft_config=lora_config,
                description="low-rank adapters on a frozen base")
