"""Prompt tuning: a learned soft prompt in front of every input; the model itself stays frozen."""

from __future__ import annotations

from pydantic import model_validator

from privtune.config import Config, ConfigValueError
from privtune.train.method import Method


class PromptTuningSettings(Config):
    num_virtual_tokens: int = 16
    """Soft-prompt length in tokens."""

    @model_validator(mode="after")
    def check(self):
        if self.num_virtual_tokens < 1:
            raise ConfigValueError("num_virtual_tokens", "must be at least 1")
        return self


def soft_prompt(config, model, task):
    from peft import PromptTuningConfig

    return PromptTuningConfig(task_type=task, num_virtual_tokens=config.prompt_tuning.num_virtual_tokens)


METHOD = Method(name="prompt-tuning", order=3, adapter=True, mergeable=False, settings=PromptTuningSettings,
                section="prompt_tuning", peft_config=soft_prompt, description="a trained soft prompt")
