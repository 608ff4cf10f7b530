"""Standard benchmarks (MMLU, HellaSwag, ...) through EleutherAI's lm-evaluation-harness.

The harness is an optional extra (`pip install 'privtune[lm-eval]'`). It is handed the model privtune
already loaded (adapter applied), so what it scores is exactly what `privtune eval` scored. Its hub
tasks download their data; `--lm-eval-include DIR` adds task YAMLs of your own, e.g. over local
JSON files, which is how the tests run it offline.
"""

from __future__ import annotations

import functools
from pathlib import Path

from privtune.errors import PrivtuneError
from privtune.models.inference import LoadedModel

SKIPPED_KEYS = ("alias", "name", "sample_len", "sample_count")


def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise PrivtuneError("no task names given", field="--lm-eval", hint="e.g. --lm-eval mmlu,hellaswag")
    return tasks


@functools.lru_cache(maxsize=4)
def task_manager(include: Path | None):
    """The harness's task registry, plus the user's own task folder; built once (it indexes every task
    folder, ~10 s) for the check and both models."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise PrivtuneError("--lm-eval needs lm-evaluation-harness", field="--lm-eval",
                            hint="pip install 'privtune[lm-eval]'") from None
    if include is not None and not include.is_dir():
        raise PrivtuneError("not a directory of task YAML files", source=str(include), field="--lm-eval-include")
    return TaskManager(include_path=str(include) if include else None)


def check_tasks(tasks: list[str], include: Path | None) -> None:
    manager = task_manager(include)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise PrivtuneError(f"unknown lm-eval task(s): {', '.join(unknown)}", field="--lm-eval",
                            hint="`lm-eval ls tasks` lists them; --lm-eval-include DIR adds your own YAMLs")


def plain_model(model):
    """The harness wants a transformers model: merge an adapter in (eval's last use of this copy).

    The harness re-ties the output head to the embeddings; an adapter that trained the head
    (`modules_to_save`) leaves them different after merging, so the config must say so.
    """
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
        head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and head.weight is not embeddings.weight:
            model.config.tie_word_embeddings = False
    return model


def run_harness(loaded: LoadedModel, tasks: list[str], include: Path | None, *, batch_size: int, limit: int,
                chat_template: bool, seed: int) -> dict[str, dict[str, float]]:
    """Scores per task and metric, e.g. {"mmlu": {"acc,none": 0.41, "acc_stderr,none": 0.004}}."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    model = HFLM(pretrained=plain_model(loaded.model), tokenizer=loaded.tokenizer, batch_size=batch_size)
    output = simple_evaluate(model=model, tasks=tasks, task_manager=task_manager(include), limit=limit or None,
                             apply_chat_template=chat_template, log_samples=False, random_seed=seed,
                             numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                             bootstrap_iters=1000)
    return {task: {key: value for key, value in scores.items()
                   if key not in SKIPPED_KEYS and isinstance(value, (int, float))}
            for task, scores in output["results"].items()}
