"""DPO: direct preference optimisation (TRL's DPOTrainer) on chosen/rejected pairs, LoRA adapters on a
frozen base (typically an SFT model artifact); the base with the adapter off is the reference model.
`preference.full: true` trains every weight instead, against a frozen copy of the starting model."""

from __future__ import annotations

from pydantic import model_validator

from privtune.config import Config, ConfigValueError
from privtune.train.method import Method
from privtune.train.methods.lora import lora_config


class PreferenceSettings(Config):
    beta: float = 0.1
    """How far from the reference model the policy may move (DPO, KTO) or the weight of the odds-ratio
    term (ORPO's lambda); TRL's default."""
    desirable_weight: float = 1.0
    """KTO: the weight of desirable examples' loss (raise it when they are the fewer)."""
    undesirable_weight: float = 1.0
    """KTO: the weight of undesirable examples' loss."""
    sft_weight: float = 0.0
    """DPO: add the chosen answers' own loss with this weight (RPO; TRL's loss_type sigmoid + sft). Plain DPO can
    push the chosen answers' likelihood down with the rejected ones' and spoil generation; this holds it up."""
    full: bool = False
    """Train every weight instead of LoRA adapters (DPO and KTO then hold a frozen copy of the starting model
    as the reference: twice the model's memory, plus the optimizer's for all of it)."""

    @model_validator(mode="after")
    def check(self):
        if self.beta <= 0 or self.desirable_weight <= 0 or self.undesirable_weight <= 0:
            raise ConfigValueError("beta", "beta and the KTO weights must be > 0")
        if self.sft_weight < 0:
            raise ConfigValueError("sft_weight", f"must be >= 0, got {self.sft_weight}")
        return self


def preference_lora(config, model, task):
    """LoRA adapters, unless the recipe trains every weight (`preference.full`)."""
    return None if config.preference.full else lora_config(config, model, task)


def build_trainer(model, tokenizer, adapter, dataset, config, args, callbacks):
    from trl import DPOConfig, DPOTrainer

    from privtune.train.preference_trainer import build_preference_trainer

    settings = config.preference
    losses = ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, settings.sft_weight]}
              if settings.sft_weight else {})
    return build_preference_trainer(DPOTrainer, DPOConfig, {"beta": settings.beta, **losses}, model, tokenizer,
                                    adapter, dataset, config, args, callbacks)


METHOD = Method(name="dpo", order=5, adapter=True, examples="preference", settings=PreferenceSettings,
                section="preference", peft_config=preference_lora, build_trainer=build_trainer,
                description="direct preference optimisation on chosen/rejected pairs (LoRA)")
