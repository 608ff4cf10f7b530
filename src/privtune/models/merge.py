"""Merging an adapter into its base: full precision, saved in the base's own dtype. Shared by train
(`--merge`) and export; owned by neither stage."""

from __future__ import annotations

import json
from pathlib import Path

from privtune.errors import PrivtuneError


def merge_adapter(base_location: str, adapter_dir: Path, out_dir: Path, is_seq2seq: bool) -> Path:
    """Fold a LoRA adapter into the base and save it as safetensors, in the base's own dtype.

    The base is reloaded unquantized (a QLoRA adapter merges into the full-precision weights), so
    the result loads with plain `from_pretrained` and in vLLM. The merge runs in float32 (W + BA
    rounded once, not once per step) and the result is cast back before saving: a bf16 base must
    not come out as an fp32 copy twice its size. The tokenizer comes from the adapter folder, so
    the chat template the model was trained with travels along.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from privtune.runtime import saved_dtype

    check_mergeable(adapter_dir)
    auto = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    try:
        stored = saved_dtype(AutoConfig.from_pretrained(base_location))
        base = auto.from_pretrained(base_location, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise PrivtuneError(f"cannot load the base model '{base_location}' to merge into: "
                            f"{str(exc).splitlines()[0]}", field="--merge") from None
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.to(stored).save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out_dir)
    return out_dir


def check_mergeable(adapter_dir: Path) -> None:
    """Refuse before loading anything: only LoRA (and QLoRA) adapters fold into the weights."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise not_mergeable("serve the adapter as it is")


def not_mergeable(hint: str) -> PrivtuneError:
    """One message for both places that refuse a merge: before training (sft) and before loading."""
    return PrivtuneError("only LoRA/QLoRA adapters can be merged; prompt-tuning keeps its soft prompt",
                         field="--merge", hint=hint)
