"""Parsing a teacher's batch: a block with the next task run into it is rejected and counted."""

from privtune.generate import stage
from privtune.generate.parse import parse_tasks, rejection_reason
from tests.conftest import ROOT
from tests.fake_teacher import FakeTeacher
from tests.generate.test_generate import config, endpoint

GLUED = ("###\n1. Instruction: Greet the customer politely.\n1. Input:\n<noinput>\n1. Output:\nHello!\n"
         "2. Instruction: Summarize the refund policy for a customer.\n2. Input:\n<noinput>\n2. Output:\nRefunds...\n"
         "###\n3. Instruction: Explain how to reset a password.\n3. Input:\n<noinput>\n3. Output:\nClick reset.")


def reasons(text: str) -> list:
    tasks, _ = parse_tasks(text, truncated=False)
    return [rejection_reason(t, 3, 150, []) for t in tasks]


def test_a_block_with_the_next_task_glued_in_is_rejected():
    assert reasons(GLUED) == ["merged_tasks", None]
    glued_input = "1. Instruction: Translate this sentence to French.\n1. Input:\nHi\n2. Output: x\n1. Output:\nSalut"
    assert reasons(glued_input) == ["merged_tasks"]


def test_numbers_inside_an_answer_are_not_a_task():
    text = ("1. Instruction: List three steps to reset a password.\n1. Input:\n<noinput>\n1. Output:\n"
            "1. Open settings.\n2. Click reset.\n3. Output the new password: done")
    assert reasons(text) == [None]


def test_merged_blocks_are_counted_in_the_manifest(tiny_model, workspace):
    with FakeTeacher() as teacher:
        plain = teacher.task_text
        teacher.task_text = lambda n: plain(n).removeprefix("###\n") if n % 2 else plain(n)  # odd ones lose "###"
        artifact, _ = stage.run(endpoint(teacher), str(tiny_model), config(num=20), workspace,
                                seeds=ROOT / "data" / "seeds.jsonl")
    assert artifact.manifest["metrics"]["generation"]["dropped"]["merged_tasks"] > 0
    rows = [l for l in (artifact.path / "generated.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and not any("Instruction:" in r for r in rows)
    assert ("dropped: merged_tasks", str(artifact.manifest["metrics"]["generation"]["dropped"]["merged_tasks"])) \
        in stage.summary_rows(artifact)
