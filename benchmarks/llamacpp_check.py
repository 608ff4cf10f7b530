"""Run an export's GGUF files in llama.cpp itself and ask them the eval questions (issue #13).

`privtune export --to gguf` verifies its files with transformers' GGUF loader; this asks llama.cpp
(llama-cpp-python, not a privtune dependency: it compiles from its sdist) the same questions:

- the questions are the prompts of the test split of the dataset the exported model was trained on
  (export manifest -> model artifact -> dataset artifact -> test.jsonl, as `privtune export` finds
  them), else the export's fixed everyday prompts;
- each prompt is rendered by the merged model's own chat template (its HF tokenizer) and given to
  `llm(text, max_tokens=32, temperature=0, stop=[...])`, the stops being the Modelfile's
  `PARAMETER stop` texts; then a second time without `stop=`, so only the GGUF's own eos /
  end-of-generation metadata can end the answer (finish_reason 'stop', not 'length');
- the reference is the merged HF model, greedy, same prompt text, stopping at privtune's stop ids.

Per file: answers identical to the merged model's, answers whose JSON equals the expected answer (the
demo classifies tickets into {"category", "priority"}), answers stopped at end of turn with and without
stop=, whether llama.cpp tokenizes the prompts like the HF tokenizer, and completion tokens/s.

    PYTHONPATH=/path/to/llama-cpp-python nice -n 10 .venv/bin/python benchmarks/llamacpp_check.py \\
        demo-out/runs/export-<id> --out bench-out/llamacpp-check.md

Without an importable `llama_cpp` it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

INSTALL_HINT = ("llama-cpp-python is not a privtune dependency and has no prebuilt wheel for most CPUs; build it "
                "from its sdist (minutes), outside privtune's venv if you like:\n"
                "  CMAKE_ARGS='-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF' "
                "pip install --target DIR llama-cpp-python==0.3.36\n"
                "then run this with PYTHONPATH=DIR")


@dataclass
class Question:
    messages: list[dict]
    reference: str | None
    """The dataset's answer (None for the fixed prompts)."""
    text: str = ""
    """The prompt as the chat template renders it, with the generation prompt."""
    hf_ids: list[int] = field(default_factory=list)


@dataclass
class Answers:
    """One model's answers: text, whether it ended at end of turn, completion tokens, seconds."""

    texts: list[str] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    """Token-by-token generation after the first token (the prompt's evaluation left out)."""

    def add(self, text: str, stopped: bool, tokens: int, seconds: float) -> None:
        self.texts.append(text.strip())
        self.stopped.append(stopped)
        self.tokens += tokens
        self.seconds += seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0


def llama_cpp_or_none():
    try:
        import llama_cpp
        from llama_cpp import Llama  # noqa: F401  (loading the shared library can fail too)
    except (ImportError, OSError, RuntimeError) as exc:
        print(f"llamacpp_check: skipped: llama_cpp is not importable ({type(exc).__name__}: {exc}).\n"
              f"{INSTALL_HINT}", file=sys.stderr)
        return None
    return llama_cpp


def find_export(ref: str, workspace: str | None):
    """An export artifact by folder, or by id / `export-<id>` in the workspace."""
    from privtune.artifacts import Artifact, Workspace
    from privtune.errors import PrivtuneError

    if (Path(ref) / "manifest.json").is_file():
        artifact = Artifact.load(Path(ref))
    else:
        artifact = Workspace(workspace).resolve(ref, kind="export")
        if artifact is None:
            raise PrivtuneError(f"no export artifact '{ref}'", hint="pass the export-<id> folder, or its id with "
                                                                     "--workspace")
    if artifact.kind != "export" or artifact.manifest.get("to") != "gguf" or not artifact.manifest.get("gguf"):
        raise PrivtuneError(f"{artifact.path.name} is not a GGUF export (privtune export --to gguf)",
                            source=str(artifact.path))
    return artifact


def merged_model(export, tmp: Path):
    """The model the export came from, as full HF weights (the adapter merged, as `privtune export` does),
    with its tokenizer and stop ids; and the Source, for its lineage."""
    from privtune.artifacts import Workspace
    from privtune.export import stage

    workspace = Workspace(export.path.parent)
    parents = export.manifest.get("parents") or []
    model = parents[0] if parents else export.manifest["source"]["location"]
    source = stage.find_source(model, workspace)
    hf_dir = stage.merged_folder(source, tmp / "merged" if source.adapter else None)
    tokenizer, stops = stage.stop_ids(hf_dir)
    return source, workspace, hf_dir, tokenizer, stops


def eval_questions(source, workspace, limit: int) -> tuple[list[Question], str]:
    """The test split of the model's dataset (what `privtune export` verifies on), with its answers;
    else the fixed prompts."""
    from privtune.errors import PrivtuneError
    from privtune.contract import find_dataset, split_rows
    from privtune.export import verify

    if source.ref.artifact is not None:
        try:
            dataset = find_dataset(source.ref.artifact, None, workspace)
            split, rows, _ = split_rows(dataset, limit)
            questions = []
            for row in rows:
                prompt = verify.prompts_of([row])
                answers = [m["content"] for m in row.get("messages", []) if m.get("role") == "assistant"]
                if prompt:
                    questions.append(Question(prompt[0], answers[-1] if answers else None))
            if questions:
                return questions, f"dataset {dataset.id}, {split} split ({len(questions)} prompts)"
        except PrivtuneError:
            pass
    prompts = verify.fixed_prompts(limit or len(verify.FIXED_PROMPTS))
    return [Question(p, None) for p in prompts], f"{len(prompts)} fixed prompts (no dataset in the lineage)"


def modelfile_stops(folder: Path, manifest: dict, fallback: list[str]) -> list[str]:
    """The `PARAMETER stop` texts of the export's Modelfiles (what Ollama stops on)."""
    stops = []
    for path in sorted(folder.glob("Modelfile*")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("PARAMETER stop "):
                stops.append(json.loads(line[len("PARAMETER stop "):]))
    return list(dict.fromkeys(stops)) or manifest.get("stop_strings") or fallback


def reference_answers(hf_dir: Path, tokenizer, stops: list[int], questions: list[Question], max_tokens: int,
                      threads: int) -> Answers:
    """The merged model, float32, greedy, one prompt at a time (as llama.cpp is run), up to a stop id."""
    import torch
    from transformers import AutoModelForCausalLM

    from privtune.eval.stage import until_stop

    from transformers import LogitsProcessor, LogitsProcessorList

    class Clock(LogitsProcessor):
        """The time of each forward pass's end: the first is the prompt's, the rest one token each."""

        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    answers = Answers()
    for question in questions:
        ids = torch.tensor([question.hf_ids])
        clock = Clock()
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 do_sample=False, num_beams=1, eos_token_id=stops or None,
                                 pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                 else stops[0], logits_processor=LogitsProcessorList([clock]))
        seconds = time.perf_counter() - started
        new = out[0, ids.shape[1]:]
        text, stopped = until_stop(new, stops, tokenizer)
        tokens = next((i for i, t in enumerate(new.tolist()) if t in stops), len(new))
        answers.add(text, stopped, tokens, seconds)
        answers.decode_tokens += len(clock.times) - 1
        answers.decode_seconds += clock.times[-1] - clock.times[0]
    del model
    return answers


def run_gguf(llama_cpp, path: Path, questions: list[Question], max_tokens: int, threads: int,
             stop: list[str] | None) -> tuple[Answers, dict]:
    """llama.cpp's answers; `stop=None` leaves out `stop=` so only the GGUF's eog tokens end an answer."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False, seed=0)
    kwargs = {"stop": stop} if stop is not None else {}
    answers = Answers()
    same_tokens = 0
    add_bos = llm._model.add_bos_token()
    for question in questions:
        ids = llm.tokenize(question.text.encode("utf-8"), add_bos=add_bos, special=True)
        same_tokens += ids == question.hf_ids
        llm.reset()  # each answer from a fresh prompt evaluation: no KV prefix carried between questions
        started = time.perf_counter()
        result = llm(question.text, max_tokens=max_tokens, temperature=0, **kwargs)
        seconds = time.perf_counter() - started
        choice = result["choices"][0]
        answers.add(choice["text"], choice["finish_reason"] == "stop", result["usage"]["completion_tokens"], seconds)
    perf = llama_cpp.llama_perf_context(llm._ctx.ctx)  # totals over this Llama's calls
    answers.decode_tokens, answers.decode_seconds = perf.n_eval, perf.t_eval_ms / 1000
    model = llm._model
    info = {"same_prompt_tokens": same_tokens, "add_bos": model.add_bos_token(),
            "eos": f"{model.token_eos()} {model.token_get_text(model.token_eos())!r}",
            "eot": f"{model.token_eot()} {model.token_get_text(model.token_eot())!r}" if model.token_eot() >= 0
            else "none"}
    del llm
    return answers, info


def json_equal(answer: str, reference: str | None) -> bool:
    from privtune.eval.metrics import json_fields

    expected = json_fields(reference) if reference else None
    return bool(expected) and json_fields(answer) == expected


def report(export, source_desc: str, merged_label: str, questions: list[Question], stop_texts: list[str],
           stop_ids: list[int], merged: Answers, results: dict, max_tokens: int, threads: int, version: str,
           load: tuple[float, float]) -> str:
    n = len(questions)
    from privtune.eval.metrics import json_fields

    with_json = sum(bool(q.reference and json_fields(q.reference)) for q in questions)

    def json_cell(answers: Answers) -> str:
        return f"{sum(json_equal(a, q.reference) for a, q in zip(answers.texts, questions))}/{with_json}" \
            if with_json else "-"

    def same(answers: Answers) -> int:
        return sum(a == b for a, b in zip(answers.texts, merged.texts))

    header = ("model", "same answer as merged", "JSON = expected", "stopped at end of turn (stop=)",
              "stopped at end of turn (no stop=)", "prompt tokens = HF", "tok/s", "decode tok/s")
    lines = [f"# llama.cpp check of {export.path.name}", "",
             f"- GGUF files of `{export.path}` run by llama-cpp-python {version} "
             f"(`Llama(n_ctx=2048, n_threads={threads}, seed=0)`, `llm(prompt, max_tokens={max_tokens}, "
             f"temperature=0)`), against the merged model {merged_label} (transformers, float32, greedy, "
             f"max_new_tokens={max_tokens}, stop ids {stop_ids}).",
             f"- Questions: {source_desc}, each rendered by the model's chat template (HF tokenizer, "
             "add_generation_prompt=True).",
             f"- stop= texts (the Modelfile's `PARAMETER stop`): {json.dumps(stop_texts)}. The second pass "
             "passes no stop=: only the GGUF's own eos/end-of-generation tokens can end an answer.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             f"| merged (transformers) | - | {json_cell(merged)} | {sum(merged.stopped)}/{n} (stop ids) | - | - "
             f"| {merged.tokens_per_s:.1f} | {merged.decode_tokens_per_s:.1f} |"]
    for quant, (with_stop, without_stop, info) in results.items():
        no_stop_same = same(without_stop)
        lines.append(f"| {quant} | {same(with_stop)}/{n} (no stop=: {no_stop_same}/{n}) | {json_cell(with_stop)} "
                     f"| {sum(with_stop.stopped)}/{n} | {sum(without_stop.stopped)}/{n} "
                     f"| {info['same_prompt_tokens']}/{n} | {with_stop.tokens_per_s:.1f} "
                     f"| {with_stop.decode_tokens_per_s:.1f} |")
    lines += ["", "tok/s: answer tokens / wall seconds of the calls, prompt evaluation included, one prompt at a "
                  f"time, {threads} threads (llama.cpp: the stop= pass). decode tok/s: the tokens after the first "
                  "/ their time (llama.cpp: llama_perf_context's n_eval / t_eval; transformers: between the first "
                  "and last forward pass of each answer). Timings are of a shared machine: 1-minute load average "
                  f"{load[0]:.2f} at the start, {load[1]:.2f} at the end, on {os.cpu_count()} CPUs.", ""]
    for quant, (_, _, info) in results.items():
        lines.append(f"- {quant} GGUF metadata as llama.cpp reads it: eos {info['eos']}, eot {info['eot']}, "
                     f"adds BOS {info['add_bos']}")
    differences = [(quant, i) for quant, (answers, _, _) in results.items()
                   for i, (a, b) in enumerate(zip(answers.texts, merged.texts)) if a != b]
    if differences:
        lines += ["", "## Answers that differ from the merged model's (first 8)", ""]
        for quant, i in differences[:8]:
            lines.append(f"- {quant} #{i}: llama.cpp {results[quant][0].texts[i]!r} vs merged {merged.texts[i]!r}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="export artifact folder (export-<id>), or its id with --workspace")
    parser.add_argument("--workspace", help="workspace holding the export [default: $PRIVTUNE_HOME or privtune-runs]")
    parser.add_argument("--prompts", type=int, default=0, help="questions asked (0: the whole test split)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    args = parser.parse_args(argv)

    llama_cpp = llama_cpp_or_none()
    if llama_cpp is None:
        return 0

    from privtune.errors import PrivtuneError
    from privtune.ui import quiet_libraries

    quiet_libraries()
    load_start = os.getloadavg()[0]
    try:
        export = find_export(args.export, args.workspace)
        with tempfile.TemporaryDirectory(prefix="llamacpp-check-") as tmp:
            source, workspace, hf_dir, tokenizer, stop_ids = merged_model(export, Path(tmp))
            questions, source_desc = eval_questions(source, workspace, args.prompts)
            for q in questions:
                q.text = tokenizer.apply_chat_template(q.messages, add_generation_prompt=True, tokenize=False)
                q.hf_ids = tokenizer(q.text, add_special_tokens=False)["input_ids"]
            from privtune.export.modelfile import stop_strings

            stop_texts = modelfile_stops(export.path, export.manifest, stop_strings(tokenizer, stop_ids))
            print(f"{len(questions)} questions from {source_desc}; merged model {hf_dir}", file=sys.stderr)
            merged = reference_answers(hf_dir, tokenizer, stop_ids, questions, args.max_tokens, args.threads)
            print(f"merged: {merged.tokens_per_s:.1f} tok/s, decode {merged.decode_tokens_per_s:.1f}",
                  file=sys.stderr)
            results = {}
            for quant, entry in export.manifest["gguf"].items():
                path = export.path / entry["file"]
                with_stop, info = run_gguf(llama_cpp, path, questions, args.max_tokens, args.threads, stop_texts)
                without_stop, _ = run_gguf(llama_cpp, path, questions, args.max_tokens, args.threads, None)
                results[quant] = (with_stop, without_stop, info)
                print(f"{quant}: {with_stop.tokens_per_s:.1f} tok/s, decode {with_stop.decode_tokens_per_s:.1f}",
                      file=sys.stderr)
            label = (f"`{source.folder}` merged into {source.base}" if source.adapter else f"`{source.folder}`")
            text = report(export, source_desc, label, questions, stop_texts, stop_ids, merged, results,
                          args.max_tokens, args.threads, getattr(llama_cpp, "__version__", "?"),
                          (load_start, os.getloadavg()[0]))
    except PrivtuneError as exc:
        print(f"llamacpp_check: error: {exc}", file=sys.stderr)
        return 1
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
