"""Self-instruct as Stanford Alpaca ran it: each request shows a few sampled seed tasks (and a few already
generated), asks for a numbered batch of new ones in one chat turn, and the batch is parsed into tasks.
With --docs, each request shows a document chunk and asks for question/answer pairs in the same format."""

from __future__ import annotations

import re

from privtune.generate.parse import parse_tasks
from privtune.generate.stage import PromptBuilder, StyleContext, template_text
from privtune.generate.style import Plan, Reply, Style, usage


def read_batch(response, prompt) -> Reply:
    """The tasks in one chat answer; an answer that continued the prompt's open "N. Instruction:" gets it back."""
    prompt_tokens, completion_tokens = usage(response)
    reply = Reply(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  request_id=getattr(response, "id", None))
    choices = getattr(response, "choices", None) or []
    content = choices[0].message.content if choices and choices[0].message else None
    if not content or not content.strip():
        reply.malformed = True
        return reply
    reply.truncated = choices[0].finish_reason == "length"
    if not re.match(r"\s*(###|\d+\.)", content):
        content = f"{prompt.next_number}. Instruction: {content}"
    reply.tasks, reply.unparsed = parse_tasks(content, reply.truncated)
    return reply


def prepare(context: StyleContext) -> Plan:
    config = context.config
    template = template_text(config, context.source.mode)
    builder = PromptBuilder(context.source, config, template, context.redact_text)

    async def ask(clients, prompt) -> Reply:
        response = await clients.chat(model=context.endpoint.model, messages=[{"role": "user", "content": prompt.text}],
                                      temperature=config.temperature, top_p=config.top_p,
                                      max_tokens=config.max_tokens, stop=config.stop or None)
        return read_batch(response, prompt)

    shown = len(context.source.seeds) or len(context.source.chunks)
    what = "seed examples" if context.source.mode == "self_instruct" else "document chunks"
    return Plan(build=builder.build, ask=ask, template=template,
                describe=lambda: f"each request shows {config.seeds_per_prompt} of {shown} {what}",
                items_shown=shown, redactions=lambda: builder.redactions, dry_prompt=lambda: builder.build([]).text)


STYLE = Style(name="self_instruct", order=10, prepare=prepare,
              description="a numbered batch of tasks a request, from sampled seeds (Alpaca) or document chunks")
