"""The trainers of preference methods (DPO, ORPO, KTO) and of reward models: TRL's own, given a preference
dataset's splits as conversational columns, rendered by TRL with the tokenizer's chat template (the
dataset's: train set it).

With a LoRA adapter and no reference model, TRL's DPO and KTO use the base with the adapter switched
off as the reference: one model in memory, not two. ORPO needs no reference model at all.

Their losses do the SFT trainer's less work for the same result (sft_trainer.compact), in the policy's pass
and the reference's alike: a language-model head scores only the answers' tokens, not the prompts', and a
batch of pairs (its chosen answers, then its rejected ones, each behind its prompt) runs the prefix all its
rows share (the template's system turn, an instruction the prompts share) once.
"""

from __future__ import annotations

from privtune.data.preference import trainer_rows
from privtune.train.sft_trainer import compact


def preference_splits(dataset) -> tuple:
    from datasets import Dataset

    train = Dataset.from_list(trainer_rows(dataset.path, "train"))
    has_eval = dataset.split_size("validation") > 0
    return train, Dataset.from_list(trainer_rows(dataset.path, "validation")) if has_eval else None


def build_preference_trainer(trainer_class, config_class, extra: dict, model, tokenizer, adapter, dataset, config,
                             args: dict, callbacks):
    """`trainer_class` (a TRL preference trainer) with `config_class(**args, **extra)`, the dataset's splits
    and the recipe's max_length."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    train, validation = preference_splits(dataset)
    trainer_args = config_class(**{"disable_dropout": True, **extra}, **args, max_length=config.max_length,
                                dataset_num_proc=None, model_init_kwargs=None)
    trainer = compact(trainer_class)(model=model, args=trainer_args, train_dataset=train, eval_dataset=validation,
                                     processing_class=tokenizer, peft_config=adapter, callbacks=callbacks)
    for noisy in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(noisy)
    return trainer
