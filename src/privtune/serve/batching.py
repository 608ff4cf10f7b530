"""Continuous batching for `privtune serve --batching`, through transformers' own manager.

Concurrent requests share the model's forward passes (a decode step reads the weights once for all
of them), so throughput grows with concurrency instead of staying flat. transformers' manager runs
one background thread with a paged KV cache of a fixed size; privtune sizes that cache itself
(`kv_cache_tokens`), because the manager's default takes a share of the host's free memory (~14 GB
for a 135M model on a 24 GB machine), and it refuses what the manager cannot survive: a request
larger than the whole cache, and a temperature of 0 (greedy is top_p=0 instead, the same tokens).

Per-request temperature and top_p are honoured; a seed cannot be (one RNG is shared by every request
in a batch), stop strings are matched on the decoded text as in the sequential server.

While the manager runs, nothing else in the process may run the model: for the length of each of its
forwards transformers sets the model's shared `config.is_causal` to False (it brings its own mask), so a
forward from another thread would attend both ways (tests/serve/test_batching.py). Every generation of
`privtune serve --batching` goes through the manager.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

from privtune.models.inference import LoadedModel
from privtune.serve.app import POLL_SECONDS

GREEDY = {"temperature": 1.0, "top_p": 0.0}
"""Exact argmax through the sampling processors (the manager samples for every request or none): top_p 0
keeps only the most likely token. No top_k processor: it would sort the vocabulary a second time a step."""


def use_argmax_for_greedy(processors) -> None:
    """Swap transformers' per-request top-p warper for one that keeps greedy rows' argmax without sorting.

    The warper sorts the whole vocabulary for every row each step, also for greedy requests (top_p 0),
    whose answer is the argmax: on 2 CPU cores, 8 requests of SmolLM2-135M ran at 81 tok/s with it and
    102 without any processor. Rows with 0 < top_p < 1 still go through transformers' own code; greedy
    rows keep only their first maximum, the token `generate(do_sample=False)` picks.
    """
    from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingTopPLogitsWarper

    class ArgmaxForGreedyTopP(ContinuousBatchingTopPLogitsWarper):
        def __call__(self, scores, tensor_arg):
            import torch

            top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
            greedy, nucleus = top_p <= 0, (top_p > 0) & (top_p < 1)
            out = scores
            if bool(nucleus.any()):
                out = scores.clone()
                out[nucleus] = super().__call__(scores[nucleus], tensor_arg[: scores.size(0)][nucleus])
            rows = greedy.nonzero(as_tuple=True)[0]
            if rows.numel():
                keep = torch.zeros_like(scores, dtype=torch.bool)
                keep[rows, scores[rows].argmax(dim=-1)] = True
                out = out.masked_fill(greedy.unsqueeze(-1) & ~keep, self.filter_value)
            return out

    for index, processor in enumerate(processors):
        if type(processor) is ContinuousBatchingTopPLogitsWarper:
            replacement = ArgmaxForGreedyTopP.__new__(ArgmaxForGreedyTopP)
            replacement.__dict__.update(processor.__dict__)
            processors[index] = replacement


def sample_only_rows_with_a_choice() -> None:
    """Have the manager's sampler take the argmax of rows that have one token left, and draw only the rest.

    With sampling on (it is, so that any request may sample), the manager runs a softmax and
    `torch.multinomial` over the whole vocabulary for every row each step: 6.3 ms a step for 8 rows of
    SmolLM2's 49K vocabulary on 2 CPU cores, ~8% of a decode step, also for greedy rows, which
    use_argmax_for_greedy has already cut to one finite score. A draw from one finite score is that
    token, so taking it directly changes no answer (tests/serve/test_batching.py). The manager creates
    its model runner inside its own thread, so this replaces the runner class's `_sample` once per
    process; rows with more than one candidate, and runs that return log-probabilities, keep
    transformers' own code.
    """
    import torch
    from transformers.generation.continuous_batching.model_runner import ModelRunner

    original = ModelRunner._sample
    if getattr(original, "privtune_single_choice", False):
        return

    def _sample(self, scores, output_ids):
        if not self.do_sample or self.return_logprobs:
            return original(self, scores, output_ids)
        rows = scores[0]
        next_tokens = rows.argmax(dim=-1)
        drawn = ((rows > float("-inf")).sum(dim=-1) != 1).nonzero(as_tuple=True)[0]
        if drawn.numel():
            probs = torch.nn.functional.softmax(rows[drawn], dim=-1)
            next_tokens[drawn] = torch.multinomial(probs, num_samples=1).squeeze(-1)
        output_ids[0, : next_tokens.size(0)].copy_(next_tokens)

    _sample.privtune_single_choice, _sample.transformers_sample = True, original
    ModelRunner._sample = _sample


class BatchedGenerator:
    """The sequential Generator's interface (`prepare`, `generate`), with requests batched continuously."""

    def __init__(self, sequential, kv_cache_tokens: int, page_size: int | None = None,
                 max_batch_tokens: int | None = None):
        from transformers import ContinuousBatchingConfig, GenerationConfig

        self.sequential = sequential  # tokenizing and the limits are the sequential server's
        self.loaded: LoadedModel = sequential.loaded
        self.stops = sequential.stops
        on_gpu = self.loaded.device != "cpu"
        page = page_size or (256 if on_gpu else 64)
        self.kv_cache_tokens = max(page, kv_cache_tokens // page * page)
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        defaults = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.95, top_k=0,  # the processors on, so
                                    max_new_tokens=128, eos_token_id=self.stops or None,  # a request can set them
                                    pad_token_id=tokenizer.pad_token_id)
        batching = ContinuousBatchingConfig(page_size=page, num_blocks=self.kv_cache_tokens // page,
                                            max_batch_tokens=max_batch_tokens or (2048 if on_gpu else 512),
                                            per_request_processors=True, max_queue_size=4096)
        self.manager = model.init_continuous_batching(generation_config=defaults,
                                                      continuous_batching_config=batching)
        use_argmax_for_greedy(self.manager.logit_processor.logits_processor)
        sample_only_rows_with_a_choice()
        # Started from a daemon thread, the manager's loop thread is a daemon too: a server (or test) that ends
        # without close() can still exit, instead of waiting for ever on a thread no one will stop.
        starter = threading.Thread(target=self.manager.start, daemon=True)
        starter.start()
        starter.join()

    def prepare(self, text: str, max_tokens: int):
        """The sequential checks, and one the manager needs: the request must fit in the KV cache."""
        inputs = self.sequential.prepare(text, max_tokens)
        length = int(inputs["input_ids"].shape[1])
        if length + max_tokens > self.kv_cache_tokens:
            raise ValueError(f"prompt ({length} tokens) + max_tokens ({max_tokens}) exceeds this server's KV cache "
                             f"of {self.kv_cache_tokens} tokens (privtune serve --kv-cache-tokens)")
        return inputs

    @staticmethod
    def sampling(request) -> dict:
        if request.temperature <= 1e-3:  # 0 would divide the logits by zero inside the manager's thread
            return dict(GREEDY)
        return {"temperature": float(request.temperature), "top_p": float(request.top_p)}

    async def generate(self, inputs, request, on_text, cancelled: threading.Event, streamed: bool = True) -> dict:
        """Submit, stream text pieces to `on_text` as tokens arrive, and return the sequential server's result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        request_id = uuid.uuid4().hex
        prompt_tokens = int(inputs["input_ids"].shape[1])
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        tokenizer, sent = self.loaded.tokenizer, [""]

        def finish(reason: str, tokens: int, text: str | None = None) -> None:
            if not done.done():
                done.set_result({"text": sent[0] if text is None else text, "finish_reason": reason, "prompt_tokens": prompt_tokens,
                                 "completion_tokens": tokens})

        def on_output(output) -> None:  # on the event loop, each time the request has new tokens
            if done.done():
                return
            if cancelled.is_set():  # its client left, or the server is stopping: free the slot at once
                self.cancel(request_id)
                finish("cancelled", 0)
                return
            if output.error:
                done.set_exception(RuntimeError(f"generation failed: {output.error}"))
                return
            generated = list(output.generated_tokens)
            text = tokenizer.decode([t for t in generated if t not in self.stops], skip_special_tokens=True)
            hit = next((s for s in stops if s in text), None)
            if hit:
                text = text[: text.index(hit)]
            elif not output.is_finished():
                text = text.rstrip("\ufffd")  # a character still being spelled out in byte tokens
            if len(text) > len(sent[0]) and text.startswith(sent[0]):
                on_text(text[len(sent[0]):])
                sent[0] = text
            if hit:  # streamed pieces may have begun the stop string, as in the sequential server; the text may not
                self.cancel(request_id)
                finish("stop", len(generated), text)
            elif output.is_finished():  # the whole decode, not the streamed pieces: a later token can change
                # how earlier ones decode, and then the pieces stop growing (the answer came back cut short)
                finish("stop" if generated and generated[-1] in self.stops else "length", len(generated), text)

        self.manager.register_result_handler(request_id, on_output)
        streaming = bool(stops) or streamed  # else one delivery at the end: no decoding and no callback per token
        added = self.manager.add_request(inputs["input_ids"][0].tolist(), request_id=request_id, streaming=streaming,
                                         max_new_tokens=request.max_tokens, eos_token_id=self.stops or None,
                                         **self.sampling(request))
        if added is None:
            raise RuntimeError(f"the batching worker has stopped ({self.manager.background_thread_status.fatal_error})")
        while not done.done():
            await asyncio.wait({done}, timeout=POLL_SECONDS)
            if cancelled.is_set() and not done.done():  # its client left, or the server is stopping
                self.cancel(request_id)
                finish("cancelled", 0)
        return done.result()

    def cancel(self, request_id: str) -> None:
        """Free the request's KV-cache pages, and drop its result handler: transformers drops a handler when
        its request finishes, but a cancelled request never does, so every cancel would leave one behind for
        the server's life. There is no public call to remove it (transformers 5.24)."""
        self.manager.cancel_request(request_id)
        router = self.manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)

    def close(self) -> None:
        """Cancel what is left and stop the manager's thread (it is not a daemon: it would hold the process)."""
        self.manager.stop(block=True, timeout=5, hard_stop=True)
