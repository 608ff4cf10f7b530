"""Reward model: a scalar score head on the base, trained (TRL's RewardTrainer, Bradley-Terry loss) to rank
the chosen answer of each preference pair above the rejected one; LoRA adapters plus the new head. Its
metrics hold the held-out pairwise accuracy: how often it ranks a pair as people (or a judge) did."""

from __future__ import annotations

from privtune.train.method import Method
from privtune.train.methods.lora import LoraSettings, lora_config


def score_lora(config, model, task):
    """LoRA for sequence classification: the fresh score head trains in full beside the adapters."""
    from peft import TaskType

    adapter = lora_config(config, model, TaskType.SEQ_CLS)
    adapter.modules_to_save = sorted(set(adapter.modules_to_save or []) | {"score"})
    return adapter


def build_trainer(model, tokenizer, adapter, dataset, config, args, callbacks):
    from trl import RewardConfig, RewardTrainer

    from privtune.train.preference_trainer import build_preference_trainer

    if model.config.pad_token_id is None:  # the score is read at the last non-pad token
        model.config.pad_token_id = tokenizer.pad_token_id
    return build_preference_trainer(RewardTrainer, RewardConfig, {}, model, tokenizer, adapter, dataset, config,
                                    args, callbacks)


METHOD = Method(name="reward", order=8, adapter=True, mergeable=False, examples="preference", head="score",
                settings=LoraSettings, section="lora", peft_config=score_lora, build_trainer=build_trainer,
                description="a reward model (score head + LoRA) ranking chosen over rejected answers")
