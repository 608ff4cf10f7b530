"""ORPO: odds-ratio preference optimisation (TRL's ORPOTrainer): SFT and preference in one loss, with no
reference model; LoRA adapters on a frozen base."""

from __future__ import annotations

from privtune.train.method import Method
from privtune.train.methods.dpo import PreferenceSettings, preference_lora


def build_trainer(model, tokenizer, adapter, dataset, config, args, callbacks):
    import warnings

    with warnings.catch_warnings():  # TRL warns that ORPO lives in trl.experimental
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from privtune.train.preference_trainer import build_preference_trainer

    return build_preference_trainer(ORPOTrainer, ORPOConfig,
                                    {"beta": config.preference.beta, "remove_unused_columns": False}, model, tokenizer,
                                    adapter, dataset, config, args, callbacks)


METHOD = Method(name="orpo", order=6, adapter=True, examples="preference", settings=PreferenceSettings,
                section="preference", peft_config=preference_lora, build_trainer=build_trainer,
                description="odds-ratio preference optimisation, no reference model (LoRA)")
