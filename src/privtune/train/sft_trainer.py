"""Decoder-only supervised fine-tuning through TRL's SFTTrainer, on the token ids and trained-token
masks that prep wrote."""

from __future__ import annotations

from contextlib import contextmanager

from privtune.artifacts import Artifact
from privtune.train.config import TrainConfig


def load_split(dataset: Artifact, split: str, config: TrainConfig):
    """The tokenized split; `loss: all` drops the mask so every token is learned."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    path = dataset.path / "tokenized" / f"{split}.parquet"
    if pq.ParquetFile(path).metadata.num_rows == 0:
        return None
    table = Dataset.from_parquet(str(path), keep_in_memory=True)
    return table.remove_columns(["assistant_masks"]) if config.loss == "all" else table


def resolve_packing(config: TrainConfig, use_cpu: bool) -> str:
    """`auto` packs on GPU; on CPU it pads length-grouped batches (measured faster: make bench)."""
    if config.packing != "auto":
        return config.packing
    return "none" if use_cpu else "bfd"


@contextmanager
def trained_positions_only():
    """Have TRL's fused LM head project only the positions that are learned, on every device.

    TRL scores only the trained (label != -100) positions on CUDA/XPU, but every position elsewhere,
    to keep tile shapes fixed for compiled backends (Neuron). On a CPU, in eager mode, that is the
    vocabulary projection, softmax and its backward for prompt tokens whose loss is thrown away:
    on the demo's tickets (14 of 77 tokens learned) it was 37% of a training step. The losses are
    the same either way (tests/train/test_sft_trainer.py).
    """
    import trl.trainer.utils as trl_utils

    everywhere = trl_utils._use_triton
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = everywhere


def compact(trainer_class):
    """`trainer_class` (a TRL trainer) whose loss, in training and evaluation, projects only the learned
    positions (trained_positions_only) and runs a prefix that all rows of a batch share once
    (train.shared_prefix): the same loss and gradients for less work."""
    from privtune.train.shared_prefix import shared_prefix

    class Compact(trainer_class):
        def compute_loss(self, model, *args, **kwargs):
            with trained_positions_only(), shared_prefix(model, enabled=not self.args.gradient_checkpointing):
                return super().compute_loss(model, *args, **kwargs)

    Compact.__name__ = Compact.__qualname__ = f"Compact{trainer_class.__name__}"
    return Compact


def sft_trainer_class():
    from trl import SFTTrainer

    return compact(SFTTrainer)


def build_trainer(model, tokenizer, adapter, dataset: Artifact, config: TrainConfig, args: dict, callbacks):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig

    packing = resolve_packing(config, use_cpu=args["use_cpu"])
    sampling = {"train_sampling_strategy": "group_by_length"} if packing == "none" else {}
    sft_args = SFTConfig(**args, **sampling, max_length=config.max_length, packing=packing != "none",
                         packing_strategy="wrapped" if packing == "wrapped" else "bfd",
                         padding_free=packing == "bfd", assistant_only_loss=False, completion_only_loss=None,
                         dataset_num_proc=None, model_init_kwargs=None)
    trainer = sft_trainer_class()(model=model, args=sft_args, train_dataset=load_split(dataset, "train", config),
                                     eval_dataset=load_split(dataset, "validation", config), processing_class=tokenizer,
                                     peft_config=adapter, callbacks=callbacks)
    for noisy in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(noisy)
    return trainer
