"""GGUF in: turn a `.gguf` file (what Ollama and llama.cpp run) into a model artifact, once.

transformers' GGUF loader dequantizes the file to float weights, but marks the model as not
serializable and reloads the whole file on every use. privtune loads it once, rebuilds a plain model
from its config with the dequantized state dict, and saves safetensors + tokenizer + chat template +
generation config as a model artifact whose id is derived from the file's hash: the second use of
the same file finds the artifact instead of converting again.

Checks happen before any weights are read: the architecture must be one transformers' GGUF loader
knows and every tensor's type one the `gguf` package can dequantize; a file without a chat template
(base-model GGUFs often have none) needs `--template`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from privtune.artifacts import Artifact, Workspace, file_sha256, stable_hash
from privtune.errors import PrivtuneError
from privtune.ui import console

FLOAT_TYPES = ("F32", "F16", "BF16")
MAGIC = b"GGUF"


def is_gguf_file(path: Path) -> bool:
    """A `.gguf` name, or the GGUF magic bytes: Ollama keeps its models as extension-less blobs."""
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == MAGIC
    except OSError:
        return False


def find_gguf(ref: str) -> Path | None:
    """The GGUF file `ref` names: the file itself, or the one GGUF in a folder; None if neither."""
    path = Path(ref)
    if path.suffix.lower() == ".gguf" and not path.exists():
        raise PrivtuneError("GGUF file does not exist", source=ref, field="--model")
    if path.is_file() and is_gguf_file(path):
        return path.resolve()
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise PrivtuneError(f"the folder holds {len(found)} GGUF files; name one", source=str(path),
                                field="--model", hint=", ".join(p.name for p in found))
        if found:
            return found[0].resolve()
    return None


def read_header(path: Path) -> dict:
    """Architecture, name, tensor types, chat template, token count and eos/eot ids from the GGUF header
    (no weights read): what import checks and what export verifies."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise PrivtuneError("reading GGUF files needs the `gguf` package", field="--model",
                            hint="pip install 'privtune[gguf]'") from None
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise PrivtuneError(f"not a readable GGUF file: {exc}", source=str(path), field="--model") from None

    def field(name: str):
        value = reader.fields.get(name)
        return value.contents() if value is not None else None

    types: dict[str, list[str]] = {}
    for tensor in reader.tensors:
        types.setdefault(tensor.tensor_type.name, []).append(tensor.name)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {"architecture": field("general.architecture"), "name": field("general.name"),
            "tensor_types": types, "chat_template": field("tokenizer.chat_template"),
            "tokens": len(tokens.data) if tokens is not None else 0,
            "eos_token_id": field("tokenizer.ggml.eos_token_id"), "eot_token_id": field("tokenizer.ggml.eot_token_id")}


def check_supported(path: Path, header: dict) -> None:
    """Refuse, naming what is wrong, a file transformers cannot load or `gguf` cannot dequantize."""
    from gguf.quants import _type_traits
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    architecture = header["architecture"] or "(none)"
    known = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    aliases = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
               "t5encoder": "t5"}
    if aliases.get(architecture, architecture) not in known:
        raise PrivtuneError(f"GGUF architecture '{architecture}' is not supported by transformers' GGUF loader",
                            source=str(path), field="--model", hint=f"supported: {', '.join(sorted(known))}")
    dequantizable = set(FLOAT_TYPES) | {t.name for t in _type_traits}
    unsupported = {t: names for t, names in header["tensor_types"].items() if t not in dequantizable}
    if unsupported:
        detail = "; ".join(f"{t} ({len(n)} tensors, e.g. {n[0]})" for t, n in unsupported.items())
        raise PrivtuneError(f"GGUF quantization type not supported for import: {detail}", source=str(path),
                            field="--model", hint=f"re-export the {architecture} model as F16, Q8_0 or a K-quant")


def import_id(digest: str, template: str | None) -> str:
    """The same file with the same template choice is the same artifact."""
    return stable_hash({"stage": "import", "gguf_sha256": digest, "template": template})


def imported(workspace: Workspace) -> list[Artifact]:
    """Model artifacts converted from GGUF files, newest first: read once, searched by stamp and by hash."""
    return [a for a in workspace.artifacts() if a.kind == "model" and a.manifest.get("gguf", {}).get("sha256")]


def find_imported(digest: str, imports: list[Artifact]) -> Artifact | None:
    """The newest conversion of the file with this hash, whatever template it got."""
    return next((a for a in imports if a.manifest["gguf"]["sha256"] == digest), None)


def file_stamp(path: Path) -> dict:
    """What tells that a file is unchanged without reading it."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def gguf_digest(path: Path, imports: list[Artifact]) -> str:
    """The file's SHA-256, from an earlier import of the same unchanged file (path, size, mtime) when
    there is one: hashing a multi-GB GGUF on every `--model x.gguf` would cost seconds each time."""
    stamp = file_stamp(path)
    for artifact in imports:
        recorded = artifact.manifest["gguf"]
        if {k: recorded.get(k) for k in stamp} == stamp:
            return recorded["sha256"]
    return file_sha256(path)


def resolve_gguf(path: Path, workspace: Workspace) -> Artifact:
    """`--model x.gguf` anywhere: the earlier conversion of this file, or a new one (said so)."""
    imports = imported(workspace)
    digest = gguf_digest(path, imports)
    existing = find_imported(digest, imports)
    if existing is not None:
        return existing
    console.print(f"{path.name}: a GGUF file, converting it once into a model artifact "
                  "(later uses of the same file find it)")
    artifact, _ = import_gguf(path, workspace, digest=digest)
    return artifact


def import_gguf(path: Path, workspace: Workspace, template: str | None = None, *, digest: str | None = None,
                force: bool = False) -> tuple[Artifact, bool]:
    """Convert a GGUF file into a model artifact; returns it and whether it already existed.

    `template` (a named template, a .jinja path, or `none`) replaces or supplies the chat template.
    """
    path = Path(path).resolve()
    chosen = _template_text(template) if template else None
    header = read_header(path)
    check_supported(path, header)
    digest = digest or gguf_digest(path, imported(workspace))
    artifact_id = import_id(digest, chosen if template != "none" else "none")
    existing = None if force else workspace.get("model", artifact_id)
    if existing and not force:
        return existing, True
    if not header["chat_template"] and template is None:
        raise PrivtuneError("this GGUF file has no chat template (base-model GGUFs often have none)",
                            source=str(path), field="--template",
                            hint=f"privtune import {path} --template chatml|alpaca|FILE.jinja "
                                 "(or --template none to choose one later with prep --template)")
    staging = workspace.stage("model", artifact_id)
    out = staging.path / "model"
    dtype = convert(path, out, chosen if template != "none" else None, drop_template=template == "none")
    manifest = {
        "stage": "import", "name": path.stem, "parents": [], "base_model": None, "method": "import", "adapter": False,
        "merged": False, "seq2seq": False, "dtype": dtype,
        "gguf": {**file_stamp(path), "sha256": digest, "architecture": header["architecture"],
                 "name": header["name"], "tensor_types": {t: len(n) for t, n in header["tensor_types"].items()}},
        "chat_template_sha256": hashlib.sha256(_saved_template(out).encode("utf-8")).hexdigest(),
        "chat_template_source": {"template": template or "gguf", "gguf_had_one": bool(header["chat_template"])},
        "metrics": {"architecture": header["architecture"], "dtype": dtype},
    }
    artifact = staging.finish(manifest)
    console.print(f"converted {path.name} ({header['architecture']}, "
                  f"{', '.join(header['tensor_types'])}) -> model {artifact.id}")
    return artifact, False


def _template_text(template: str) -> str | None:
    from privtune.data.render import template_text

    return None if template == "none" else template_text(template, "--template", also=("none",))


def _saved_template(folder: Path) -> str:
    """The template a saved tokenizer carries ('' for none), for the manifest's hash."""
    file = folder / "chat_template.jinja"
    return file.read_text(encoding="utf-8") if file.is_file() else ""


def load_gguf(path: Path):
    """transformers' own GGUF loading: (tokenizer, model), dequantized to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from privtune.ui import quiet_libraries

    quiet_libraries()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise PrivtuneError(f"transformers cannot load this GGUF file: {str(exc).splitlines()[0]}",
                            source=str(path), field="--model") from None
    return tokenizer, model


def convert(path: Path, out: Path, template: str | None, drop_template: bool = False) -> str:
    """Save a plain (serializable) copy of the GGUF model; returns the dtype written.

    The GGUF-loaded model carries a `quantization_config` that forbids saving; a model built from
    the same config without it, given the dequantized state dict, is the same network.
    """
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer, loaded = load_gguf(path)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    try:
        plain.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as exc:
        raise PrivtuneError(f"the GGUF's tensors do not fit its config: {str(exc).splitlines()[0]}",
                            source=str(path), field="--model") from None
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.generation_config = loaded.generation_config
    del loaded  # one float32 copy, not two, while saving
    if template:
        tokenizer.chat_template = template
    elif drop_template:
        tokenizer.chat_template = None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return str(plain.dtype).removeprefix("torch.")
