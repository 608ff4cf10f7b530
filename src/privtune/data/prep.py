"""`privtune prep`: a team's own records -> a rendered, tokenized, split dataset artifact.

The stage: find or build the artifact. Reading, rendering and writing the dataset are shared with
generate and live in data/dataset.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

from privtune.artifacts import Artifact, Result, Workspace, input_record, stable_hash
from privtune.config import config_dict
from privtune.data.dataset import SPLITS, PrepConfig, Rejects, iter_examples, load_examples, write_dataset
from privtune.data.decontaminate import against_digest, decontamination_rows
from privtune.data.formats import examples_kind
from privtune.data.preference import write_preference_dataset
from privtune.data.render import choose_template, tokenizer_fingerprint
from privtune.errors import PrivtuneError
from privtune.models.loading import load_tokenizer, resolve_model

__all__ = ["PrepConfig", "load_examples", "run", "summary_rows"]


def run(files: list[Path], model: str, config: PrepConfig, workspace: Workspace,
        force: bool = False) -> Result:
    """Prepare `files` for `model`; returns the artifact and whether it was found rather than built.

    Records stream from the files through to the dataset, so memory does not grow with their size.
    """
    if not files:
        raise PrivtuneError("no input files", field="--data")
    files = [Path(f) for f in files]
    for path in files:
        if not path.is_file():
            raise PrivtuneError("no such file", source=str(path), field="--data")
    model_ref = resolve_model(model, workspace)
    tokenizer = load_tokenizer(model_ref)
    template = choose_template(tokenizer, config.template)
    fingerprint = tokenizer_fingerprint(tokenizer, template)
    inputs = input_record(files)
    parents = [model_ref.artifact.id] if model_ref.artifact else []
    artifact_id = stable_hash({"stage": "prep", "inputs": [i["sha256"] for i in inputs],
                               "decontaminate_against": against_digest(config),
                               "config": config_dict(config), "tokenizer": fingerprint, "parents": parents})
    existing = None if force else workspace.get("dataset", artifact_id)
    if existing and not force:
        return Result(existing, reused=True)

    staging = workspace.stage("dataset", artifact_id)
    rejects, formats = Rejects(staging.path / "rejected.jsonl"), {}
    try:
        kind, examples = one_kind(iter_examples(files, config, rejects, formats))
        if kind == "sft":
            stats = write_dataset(staging.path, examples, tokenizer, template, config, source=str(files[0]),
                                  rejects=rejects if config.skip_bad else None)
        else:
            stats = write_preference_dataset(staging.path, examples, kind, tokenizer, template, config,
                                             source=str(files[0]), rejects=rejects if config.skip_bad else None)
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)  # prep starts over; nothing half-written stays
        raise
    finally:
        rejects.close()
    stats["records_read"] += rejects.count - stats["template_rejected"]  # bad records never reached the writer
    stats["rejected"] = rejects.count
    manifest = {
        "stage": "prep", "parents": parents, "inputs": inputs, "formats": formats, "examples": kind,
        "config": config_dict(config), "seed": config.seed, "metrics": stats,
        "model": model_ref.location, "tokenizer_fingerprint": fingerprint,
    }
    return Result(staging.finish(manifest), reused=False)


def one_kind(examples: Iterator[dict]) -> tuple[str, Iterator[dict]]:
    """The kind of the first example (sft, preference, unpaired), and all examples, checked to share it:
    one dataset is one kind, as one method trains on one kind."""
    first = next(examples, None)
    if first is None:
        raise PrivtuneError("no usable records", field="--data")
    kind = examples_kind(first)

    def checked() -> Iterator[dict]:
        yield first
        for example in examples:
            if examples_kind(example) != kind:
                meta = example["meta"]
                other = examples_kind(example)
                raise PrivtuneError(f"a record of kind {other} ({meta['format']}) among {kind} records: one "
                                    "dataset holds one kind", source=meta["source"], line=meta["line"],
                                    hint="prep them into separate datasets")
            yield example

    return kind, checked()


def summary_rows(artifact: Artifact) -> list[tuple[str, str]]:
    """What the user should see after prep: counts, what was dropped, and shapes worth a look."""
    m = artifact.manifest["metrics"]
    if artifact.manifest.get("examples", "sft") != "sft":
        return [("examples", artifact.manifest["examples"]), ("records read", str(m["records_read"])),
                ("rejected (bad)", str(m["rejected"])), ("exact duplicates removed", str(m["duplicates"])),
                ("over max_length dropped", str(m["overlength_dropped"])), ("examples kept", str(m["examples"])),
                ("train / validation / test", " / ".join(str(m["splits"][s]) for s in SPLITS)),
                ("longest (tokens)", str(m["longest"])),
                *([("desirable / undesirable", f"{m['labels']['desirable']} / {m['labels']['undesirable']}")]
                  if "labels" in m else []), *decontamination_rows(m)]
    p = m.get("length_percentiles", {})
    rows = [
        ("records read", str(m["records_read"])), ("rejected (bad)", str(m["rejected"])),
        ("exact duplicates removed", str(m["duplicates"])), ("over max_length dropped", str(m["overlength_dropped"])),
        ("truncated", str(m["truncated"])), ("nothing to train (dropped)", str(m["nothing_to_train"])),
        ("examples kept", str(m["examples"])),
        ("train / validation / test", " / ".join(str(m["splits"][s]) for s in SPLITS)),
        ("tokens (trained)", f"{m['tokens']} ({m['trained_tokens']})"),
        ("length p50 / p90 / p99 / max", f"{p.get('p50')} / {p.get('p90')} / {p.get('p99')} / {p.get('max')}"),
    ]
    rows += decontamination_rows(m)
    for key, label in SHAPE_WARNINGS.items():
        if m.get(key):
            rows.append((f"warning: {label}", str(m[key])))
    return rows


SHAPE_WARNINGS = {"template_rejected": "refused by the chat template (rejected)",
                  "starts_with_assistant": "conversations starting with the assistant",
                  "repeated_role": "conversations with a role twice in a row"}
