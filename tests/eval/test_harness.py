"""`privtune eval --lm-eval`: lm-evaluation-harness scores the loaded model, offline, on a task over local JSON."""

import json

import pytest

from privtune.eval import stage
from tests.conftest import ROOT

pytest.importorskip("lm_eval")


def ticket_task(folder, rows: int = 24):
    """A multiple-choice task from held-out tickets (not among the 240 trained on): pick the right JSON label."""
    records = [json.loads(l) for l in (ROOT / "data" / "tickets.jsonl").read_text().splitlines()[400:400 + rows]]
    labels = sorted({json.loads(l)["output"] for l in (ROOT / "data" / "tickets.jsonl").read_text().splitlines()})
    docs = [{"question": f"{r['instruction']}\n\n{r['input']}", "choices": labels, "answer": labels.index(r["output"])}
            for r in records]
    folder.mkdir()
    (folder / "tickets.json").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (folder / "tickets_mc.yaml").write_text(f"""task: tickets_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / 'tickets.json'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
""")
    return folder


def accuracy_by_hand(model: str, workspace, tasks, limit: int) -> float:
    """The same multiple-choice accuracy computed directly: argmax of each label's log-likelihood."""
    import torch

    from privtune.models.inference import load_for_inference

    loaded = load_for_inference(model, workspace)
    docs = [json.loads(l) for l in (tasks / "tickets.json").read_text().splitlines()][:limit]
    right = 0
    for doc in docs:
        prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": doc["question"]}],
                                                      tokenize=False, add_generation_prompt=True)
        context = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            whole = loaded.tokenizer(prompt + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = loaded.model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
            scores.append(sum(float(logits[i - 1, whole[i]]) for i in range(len(context), len(whole))))
        right += scores.index(max(scores)) == doc["answer"]
    return right / len(docs)


def test_harness_scores_tuned_and_base_on_a_local_task(tuned_model, tmp_path, cli):
    artifact, workspace = tuned_model
    tasks = ticket_task(tmp_path / "tasks")
    config = stage.EvalConfig(limit=8, max_new_tokens=24, lm_eval_chat_template=True)
    evaluation, _ = stage.run(artifact.id, config, workspace, lm_eval=["tickets_mc"], lm_eval_include=tasks)
    harness = evaluation.manifest["metrics"]["lm_eval"]
    tuned, base = harness["tuned"]["tickets_mc"]["acc,none"], harness["baseline"]["tickets_mc"]["acc,none"]
    assert tuned == pytest.approx(accuracy_by_hand(artifact.id, workspace, tasks, 8))
    assert tuned >= base + 0.25, (tuned, base)  # 18 labels: the tuned model has learned the task, the base has not
    assert "tickets_mc" in (evaluation.path / "report.md").read_text()
    code, out = cli("compare", evaluation.id, "--workspace", workspace.root)
    assert code == 0 and "tickets_mc acc" in out


def test_unknown_harness_task_is_refused_before_any_work(tuned_model, cli):
    artifact, workspace = tuned_model
    code, out = cli("eval", "--model", artifact.id, "--lm-eval", "no_such_task_xyz", "--workspace", workspace.root)
    assert code == 2 and "no_such_task_xyz" in out and "--lm-eval" in out and "Traceback" not in out
