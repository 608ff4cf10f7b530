"""Foundation rows: CLI start-up, and prep throughput against a per-record loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, Row, alpaca_like_records, timed, tiny_model


def _best_wall(command: list[str], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        _, seconds = timed(subprocess.run, command, capture_output=True, check=True)
        best = min(best, seconds)
    return best


def cli_startup() -> Row:
    privtune = _best_wall([sys.executable, "-m", "privtune", "--help"])
    transformers = _best_wall([sys.executable, "-c", "import transformers"])
    return Row("`privtune --help` wall time (best of 3)", f"{privtune:.2f} s", f"{transformers:.2f} s (import transformers)",
               transformers / privtune, "< 1 s", privtune < 1.0)


def _baseline_loop(path: Path, tokenizer) -> list[tuple[list, list]]:
    """What a plain script does: per record, read, build the chat, apply_chat_template with the mask."""
    out = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            user = record["instruction"] + (f"\n\n{record['input']}" if record["input"].strip() else "")
            messages = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
            encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                    return_assistant_tokens_mask=True)
            out.append((encoded["input_ids"], encoded["assistant_masks"]))
    return out


def prep_throughput(count: int = 50_000) -> Row:
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from privtune.artifacts import Workspace
    from privtune.data import prep

    records, origin = alpaca_like_records(count)
    model = tiny_model()
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        path = Path(tmp) / "records.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        tokenizer = AutoTokenizer.from_pretrained(model)
        config = prep.PrepConfig(max_length=100_000, dedup=False, validation_fraction=0.0, test_fraction=0.0)
        (artifact, _), privtune_s = timed(prep.run, [path], str(model), config, Workspace(Path(tmp) / "runs"))
        baseline, baseline_s = timed(_baseline_loop, path, tokenizer)
        # Same tokens and same trained-token masks, or the comparison means nothing.
        ours = pq.read_table(artifact.path / "tokenized" / "train.parquet").to_pylist()
        by_ids = {tuple(r["input_ids"]): list(r["assistant_masks"]) for r in ours}
        same = len(ours) == len(baseline) and all(by_ids.get(tuple(ids)) == list(mask) for ids, mask in baseline)
    ratio = baseline_s / privtune_s
    return Row(f"prep throughput, {count:,} Alpaca-like records", f"{count / privtune_s:,.0f} rec/s",
               f"{count / baseline_s:,.0f} rec/s (per-record apply_chat_template loop)", ratio, ">= 3x",
               ratio >= 3 and same,
               f"records {origin}; whole `prep.run` (read, dedup off, render, tokenize, split, write) vs loop; "
               f"outputs identical: {same}; {os.cpu_count()} cores")


def rows() -> list[Row]:
    return [cli_startup(), prep_throughput()]
