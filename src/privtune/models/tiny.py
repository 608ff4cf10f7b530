"""An offline base model: a BPE tokenizer trained on local text and a random-init causal LM.

The hub is not reachable on CI or in air-gapped teams, so tests and the demo use this model. It is
saved with `save_pretrained`, and everything downstream loads it with the same `from_pretrained`
code that loads a real model, so the real loading path is what gets tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

from privtune.config import Config
from privtune.data.render import named_template
from privtune.errors import PrivtuneError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


class TinyModelConfig(Config):
    """Shape of the tiny model; defaults give ~0.9M parameters, trainable in minutes on 2 CPU cores."""

    architecture: Literal["llama", "qwen2", "t5"] = "llama"
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 1024
    seed: int = 0


def _text_lines(files: Iterable[Path]) -> Iterable[str]:
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                yield from handle
        except OSError as exc:
            raise PrivtuneError(f"cannot read: {exc.strerror}", source=str(path)) from None


def train_tokenizer(text_files: list[Path], vocab_size: int):
    """A byte-level BPE tokenizer (any text encodes) with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_text_lines(text_files), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                        pad_token="<|pad|>", unk_token=None)
    tokenizer.chat_template = named_template("chatml")
    return tokenizer


def _model_config(config: TinyModelConfig, tokenizer):
    from transformers import LlamaConfig, Qwen2Config, T5Config

    common = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    if config.architecture == "t5":
        return T5Config(d_model=config.hidden_size, d_kv=config.hidden_size // config.num_heads,
                        d_ff=config.intermediate_size, num_layers=config.num_layers // 2 or 1,
                        num_heads=config.num_heads, decoder_start_token_id=tokenizer.pad_token_id,
                        tie_word_embeddings=False, **common)
    shape = dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                 num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
                 intermediate_size=config.intermediate_size,
                 max_position_embeddings=config.max_position_embeddings,
                 bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True, **common)
    return (Qwen2Config if config.architecture == "qwen2" else LlamaConfig)(**shape)


def build_tiny_model(out_dir: Path, text_files: list[Path], config: TinyModelConfig | None = None) -> Path:
    """Train the tokenizer, build a random-init model, and save both to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = config or TinyModelConfig()
    if not text_files:
        raise PrivtuneError("no text to train the tokenizer on", field="--text")
    tokenizer = train_tokenizer(text_files, config.vocab_size)
    torch.manual_seed(config.seed)
    model_config = _model_config(config, tokenizer)
    auto = AutoModelForSeq2SeqLM if config.architecture == "t5" else AutoModelForCausalLM
    model = auto.from_config(model_config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
