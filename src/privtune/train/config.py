"""The training recipe: every field typed, documented and checked where it is defined.

The keys all methods share are here; each method's own keys (`lora`, `prompt_tuning`) come from its
module in privtune.train.methods, so a new method brings its settings with it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model, field_validator, model_validator

from privtune.config import Config, ConfigValueError
from privtune.train.method import methods


class CommonSettings(Config):
    """The keys every method shares; TrainConfig adds each method's own section."""

    method: str = "lora"
    """How the model trains: one of privtune.train.methods (full, lora, qlora, prompt-tuning; `privtune recipes`)."""
    epochs: float = 3.0
    """Passes over the train split (fractions allowed); max_steps wins when set."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    learning_rate: float = 2e-4
    """Peak learning rate (after warmup)."""
    batch_size: int = 8
    """Examples per device per step (with packing: packed sequences of max_length)."""
    gradient_accumulation: int = 1
    """Batches summed per optimizer step: the effective batch is batch_size x this x GPUs."""
    max_length: int = 1024
    """Longest training sequence in tokens (packed rows with packing)."""
    packing: Literal["auto", "bfd", "wrapped", "none"] = "auto"
    """bfd: pack examples into max_length rows, attention kept within each example (padding-free);
    wrapped: concatenate and cut (fast, but examples see each other); none: pad batches of similar
    length; auto: bfd on GPU, none on CPU, where packed attention needs a dense mask and runs slower."""
    loss: Literal["assistant", "all"] = "assistant"
    """Which tokens are learned: assistant replies only, or the whole sequence."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    """How the learning rate decays after warmup."""
    warmup_ratio: float = 0.03
    """Fraction of the steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this norm."""
    gradient_checkpointing: bool = False
    """Trade compute for memory on big models."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU. bf16 on a CPU with native bf16
    (AVX512-BF16, AMX) trains under autocast: ~1.5x faster, a higher loss early on (make bench)."""
    seed: int = 42
    """Seeds initialisation, dropout and the data order (a resumed run keeps them)."""
    logging_steps: int = 5
    """Log loss and learning rate every this many steps."""
    eval_steps: int = 50
    """Evaluate on the validation split every this many steps (0: only at the end)."""
    save_steps: int = 50
    """Checkpoint every this many steps, for --resume."""
    save_total_limit: int = 2
    """Checkpoints kept."""
    threads: int = 0
    """CPU threads for torch (0: $PRIVTUNE_THREADS if set, else one per physical core this process may
    use, capped at 4; see privtune.runtime)."""
    report_to: Literal["none", "wandb", "tensorboard", "trackio"] = "none"
    """Experiment tracker (wandb stays offline unless --wandb-sync)."""

    @field_validator("method")
    @classmethod
    def known_method(cls, value: str) -> str:
        known = list(methods())
        if value not in known:
            raise ConfigValueError("", f"expected one of {', '.join(map(repr, known))}, got {value!r}")
        return value

    @model_validator(mode="after")
    def check(self):
        positive = {"learning_rate": self.learning_rate, "batch_size": self.batch_size,
                    "gradient_accumulation": self.gradient_accumulation, "max_length": self.max_length,
                    "epochs": self.epochs, "logging_steps": self.logging_steps, "save_steps": self.save_steps}
        for key, value in positive.items():
            if value <= 0:
                raise ConfigValueError(key, f"must be positive, got {value}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigValueError("max_steps", f"must be -1 (all epochs) or positive, got {self.max_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigValueError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.save_total_limit < 1:
            raise ConfigValueError("save_total_limit", "must be at least 1 (resume needs a checkpoint)")
        if self.threads < 0:
            raise ConfigValueError("threads", "must be 0 (auto) or positive")
        return self


def _sections() -> dict:
    """Each method's settings under its section name (two methods may share one, as qlora shares lora's)."""
    sections = {}
    for method in methods().values():
        if method.settings is not None:
            sections.setdefault(method.section, (method.settings, Field(default_factory=method.settings)))
    return sections


TrainConfig = create_model("TrainConfig", __base__=CommonSettings, __module__=__name__, **_sections())
TrainConfig.__doc__ = "A training recipe: the shared keys and every method's section."
METHODS = tuple(methods())
