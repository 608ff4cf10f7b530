"""QLoRA: LoRA adapters over a base loaded in 4-bit NF4 (bitsandbytes), for models too big for LoRA."""

from __future__ import annotations

from privtune.train.method import Method
from privtune.train.methods.lora import LoraSettings, lora_config


def four_bit(config, dtype) -> dict:
    import warnings

    import torch
    from transformers import BitsAndBytesConfig

    from privtune.ui import console

    if not torch.cuda.is_available():
        warnings.filterwarnings("ignore", module="bitsandbytes")
        console.print("[yellow]warning:[/] qlora on CPU works but is slow; it is meant for testing here")
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)}


def prepare_4bit(model, config):
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)


METHOD = Method(name="qlora", order=2, adapter=True, settings=LoraSettings, section="lora", load_kwargs=four_bit,
                prepare=prepare_4bit, peft_config=lora_config, description="4-bit NF4 base + LoRA adapters")
