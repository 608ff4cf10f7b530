"""The shared dataset writer encodes across worker processes once there is enough work; the workers hold
the tokenizer, the calling process keeps no state of theirs, and the result equals the serial one."""

from transformers import AutoTokenizer

from privtune.data import dataset


def chunks(n_chunks, size=3):
    conversation = lambda i: [{"role": "user", "content": f"question {i}", "train": False},
                              {"role": "assistant", "content": f"answer number {i}", "train": True}]
    return [[(f"k{c}-{i}", {"messages": conversation(c * size + i)}) for i in range(size)] for c in range(n_chunks)]


def test_workers_encode_what_one_process_encodes_and_leave_no_state(tiny_model, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    template = tokenizer.chat_template
    serial = [encoded for _, encoded in dataset.encode_stream(chunks(6), tokenizer, template)]
    monkeypatch.setattr(dataset, "PARALLEL_AFTER", 2)  # 6 chunks: enough work for the pool
    parallel = [encoded for _, encoded in dataset.encode_stream(chunks(6), tokenizer, template)]
    assert len(parallel) == 6 and [list(map(list, e[:2])) for e in parallel] == [list(map(list, e[:2])) for e in serial]
    assert dataset._held == ()  # the tokenizer lived in the workers only
