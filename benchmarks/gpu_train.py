"""GPU training benchmark: tokens/s, MFU and peak memory for random-init Llama-shaped models.

Run on a machine with an NVIDIA GPU (CI has none):
    .venv/bin/python benchmarks/gpu_train.py            # ~1B: full and lora; ~8B: qlora
    .venv/bin/python benchmarks/gpu_train.py --only 1b-full
MFU = tokens/s x (6N for full, ~4N for LoRA: no weight gradients) / peak bf16 dense FLOP/s
(989 TFLOP/s on an H100 SXM). Sequences are packed (bfd) to `--seq` tokens with Alpaca-like
lengths. tokens/s counts the tokens TRL trained on (its `num_tokens`) between the end of step
`--warm` and the last step, so CUDA warm-up and the first allocations are left out. Prints one
Markdown table.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
SHAPES = {  # Llama-shaped: hidden, layers, heads, kv heads, intermediate, vocab
    "1b": (2048, 16, 32, 8, 8192, 32000),
    "8b": (4096, 32, 32, 8, 14336, 128256),
}


def build(shape: str, folder: str, dtype):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, layers, heads, kv, inter, vocab = SHAPES[shape]
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder)  # qlora loads it back through bitsandbytes, as a user's model would
    return model


def dataset(seq: int, count: int, vocab: int):
    from datasets import Dataset

    rng = random.Random(0)
    lengths = [min(seq, int(rng.lognormvariate(5.3, 0.8)) + 16) for _ in range(count)]
    return Dataset.from_dict({"input_ids": [[rng.randrange(vocab) for _ in range(n)] for n in lengths]})


def step_clock():
    """A callback that notes the wall time at the end of every step (after a CUDA sync)."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    return StepClock()


def run(name: str, method: str, shape: str, seq: int, steps: int, batch: int, warm: int) -> dict:
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedTokenizerFast
    from trl import SFTConfig, SFTTrainer
    from tokenizers import Tokenizer, models

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as folder:
        model = build(shape, folder, torch.bfloat16)
        n_params = sum(p.numel() for p in model.parameters())
        vocab = model.config.vocab_size
        if method == "qlora":
            del model
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=torch.bfloat16)
            model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=torch.bfloat16)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>")),
                                            pad_token="<pad>", eos_token="<eos>")
        peft = None if method == "full" else LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                        task_type="CAUSAL_LM")
        args = SFTConfig(output_dir=folder + "/out", max_steps=steps, per_device_train_batch_size=batch,
                         learning_rate=1e-4, bf16=True, packing=True, padding_free=True, max_length=seq,
                         gradient_checkpointing=method != "full" or shape != "1b", logging_steps=1,
                         save_strategy="no", report_to="none", disable_tqdm=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset(seq, steps * batch * 6, vocab),
                             processing_class=tokenizer, peft_config=peft, callbacks=[clock := step_clock()])
        trainer.train()
        seen = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
        seconds = clock.times[-1] - clock.times[warm - 1]
        tokens = seen[-1] - seen[warm - 1]
    per_token = 6 if method == "full" else 4
    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), 989e12)
    tok_s = tokens / seconds
    return {"run": name, "params": f"{n_params / 1e9:.2f}B", "seq": seq, "batch": batch,
            "timed": f"steps {warm + 1}-{steps}", "tokens/s": f"{tok_s:,.0f}",
            "MFU": f"{tok_s * per_token * n_params / peak:.1%}",
            "peak GiB": f"{torch.cuda.max_memory_allocated() / 2**30:.1f}", "gpu": gpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warm", type=int, default=3, help="steps left out of the timing")
    args = parser.parse_args()
    plan = [("1b-full", "full", "1b", 2048, 8), ("1b-lora", "lora", "1b", 2048, 8), ("8b-qlora", "qlora", "8b", 2048, 1)]
    for index, (name, method, shape, seq, batch) in enumerate(p for p in plan if args.only in (None, p[0])):
        row = run(name, method, shape, seq, args.steps, batch, args.warm)
        if index == 0:  # rows print as they finish: a run cut short still leaves the earlier ones
            print("| " + " | ".join(row) + " |\n|" + "---|" * len(row), flush=True)
        print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
