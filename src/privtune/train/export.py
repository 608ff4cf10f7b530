"""After training: the loss-curve chart, and merging adapters into full weights."""

from __future__ import annotations

import json
from pathlib import Path

from privtune.errors import PrivtuneError


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_curve(metrics: list[dict], out: Path) -> Path | None:
    """A PNG of training and validation loss by step; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    if not train and not evals:
        return None
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    for points, label in ((train, "train"), (evals, "validation")):
        if points:
            axes.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out


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
