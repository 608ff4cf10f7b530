"""KTO: Kahneman-Tversky optimisation (TRL's KTOTrainer) on unpaired answers marked desirable or not;
LoRA adapters on a frozen base, the base with the adapter off as the reference model."""

from __future__ import annotations

from privtune.train.method import Method
from privtune.train.methods.dpo import PreferenceSettings, preference_lora


def build_trainer(model, tokenizer, adapter, dataset, config, args, callbacks):
    from trl import KTOConfig, KTOTrainer

    from privtune.train.preference_trainer import build_preference_trainer

    weights = {"beta": config.preference.beta, "desirable_weight": config.preference.desirable_weight,
               "undesirable_weight": config.preference.undesirable_weight}
    return build_preference_trainer(KTOTrainer, KTOConfig, weights, model, tokenizer, adapter, dataset, config,
                                    args, callbacks)


METHOD = Method(name="kto", order=7, adapter=True, examples="unpaired", settings=PreferenceSettings,
                section="preference", peft_config=preference_lora, build_trainer=build_trainer,
                description="Kahneman-Tversky optimisation on answers marked desirable or not (LoRA)")
