"""Magpie (Xu et al. 2024, arXiv:2406.08464): an instruct model, given its chat template only up to where a
user's message begins (the pre-query template), writes a user's instruction itself; a second request asks
it, in chat, for the answer. No numbered format to follow and no seed shown: what small local teachers
do well, where Alpaca's multi-task prompt mostly fails.

The pre-query template is cut from a real chat template, never written by hand: the teacher's own (the
`teacher_template` model, or by default the teacher's model name when it is a model here, as `privtune
serve` names it) or a named one (chatml, alpaca) or a .jinja file. A placeholder user message is rendered
with `apply_chat_template` and the text is cut at it; what follows the placeholder is the end of the
user's turn, sent as a stop string. `system_prompt` steers the domain ("You help customers of a parcel
service"): it is rendered into the pre-query template and sent with the answer request.

Seeds are optional; given, they only seed the near-duplicate filter (nothing of them is sent). An
instruction is screened by the filters before its answer is asked for, so a rejected one costs one
short request, not two.
"""

from __future__ import annotations

from pathlib import Path

from privtune.errors import PrivtuneError
from privtune.generate.parse import Task
from privtune.generate.redact import redact
from privtune.generate.stage import Prompt, StyleContext
from privtune.generate.style import Plan, Reply, Style, usage

PLACEHOLDER = "PRIVTUNEUSERMESSAGE7F3A"
FIELD = "teacher_template"
HINT = ("pass --set teacher_template=<the teacher's model folder, GGUF file, model artifact id or hub id>, "
        "a named template (chatml, alpaca) or a .jinja file")


def pre_query_template(tokenizer, chat_template: str | None, system: str = "", source: str = "") -> tuple[str, str]:
    """(the text up to where a user's message begins, the text that ends the user's turn), from `chat_template`
    rendered by `tokenizer` (the tokenizer's own template when None) with a placeholder user message."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": PLACEHOLDER}]
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)
    except Exception as exc:  # no template, or the template's raise_exception (e.g. no system role)
        raise PrivtuneError(f"cannot render a user turn with the chat template: {str(exc).splitlines()[0][:200]}",
                            source=source or None, field=FIELD,
                            hint=HINT if not system else "the template may not take a system message: "
                                                         "leave system_prompt empty") from None
    if not isinstance(text, str) or text.count(PLACEHOLDER) != 1:
        raise PrivtuneError("the chat template does not show the user's message as given", source=source or None,
                            field=FIELD, hint=HINT)
    prefix, _, suffix = text.partition(PLACEHOLDER)
    if not prefix.strip():
        raise PrivtuneError("the chat template puts nothing before the user's message: no pre-query template to "
                            "send", source=source or None, field=FIELD,
                            hint="magpie needs a template that marks where the user's turn begins (e.g. chatml)")
    return prefix, suffix.strip()


def teacher_chat_template(context: StyleContext) -> tuple[object, str | None, str]:
    """(tokenizer, chat template, where it came from) for the teacher: `teacher_template`, or the teacher's
    model name when it names a model here."""
    from privtune.data.render import NAMED_TEMPLATES, template_text

    ref = context.config.teacher_template
    if ref in NAMED_TEMPLATES or ref.endswith(".jinja"):
        return context.tokenizer, template_text(ref, FIELD), ref
    if not ref:
        name = context.endpoint.model
        if context.workspace.resolve(name) is None and not Path(name).exists():
            raise PrivtuneError(f"style magpie needs the teacher's chat template, and the teacher's model "
                                f"'{name}' is not a model here", field=FIELD, hint=HINT)
        ref = name
    from privtune.models.loading import load_tokenizer, resolve_model

    try:
        tokenizer = load_tokenizer(resolve_model(ref, context.workspace))
    except PrivtuneError as exc:
        raise PrivtuneError(exc.message, source=ref, field=FIELD, hint=HINT) from None
    if not tokenizer.chat_template:
        raise PrivtuneError("the model's tokenizer has no chat template", source=ref, field=FIELD, hint=HINT)
    return tokenizer, None, ref


def prepare(context: StyleContext) -> Plan:
    config = context.config
    if context.source.mode == "docs":
        raise PrivtuneError("style magpie writes its own instructions and reads no documents", field="--docs",
                            hint="leave out --docs (seeds are optional), or --set style=self_instruct")
    system, redactions = config.system_prompt, 0
    if context.redact_text and system:
        system, redactions = redact(system)
    tokenizer, chat_template, where = teacher_chat_template(context)
    prefix, end_of_turn = pre_query_template(tokenizer, chat_template, system, where)
    query_stop = [*([end_of_turn] if end_of_turn else []), *config.stop]
    model = context.endpoint.model

    async def ask(clients, prompt: Prompt) -> Reply:
        first = await clients.complete(model=model, prompt=prompt.text, temperature=config.temperature,
                                       top_p=config.top_p, max_tokens=config.query_max_tokens,
                                       stop=query_stop or None)
        reply = Reply(request_id=getattr(first, "id", None))
        reply.prompt_tokens, reply.completion_tokens = usage(first)
        choices = getattr(first, "choices", None) or []
        if not choices or choices[0].text is None:
            reply.malformed = True
            return reply
        instruction = choices[0].text.strip()
        reason = "truncated_instruction" if choices[0].finish_reason == "length" else \
            "empty_instruction" if not instruction else context.screen(instruction)
        if reason:
            reply.truncated = choices[0].finish_reason == "length"
            reply.unparsed, reply.rejected[reason] = 1, 1
            return reply
        messages = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": instruction}]
        second = await clients.chat(model=model, messages=messages, temperature=config.answer_temperature,
                                    top_p=config.top_p, max_tokens=config.max_tokens, stop=config.stop or None)
        reply.calls = 2
        tokens = usage(second)
        reply.prompt_tokens, reply.completion_tokens = reply.prompt_tokens + tokens[0], reply.completion_tokens + tokens[1]
        choices = getattr(second, "choices", None) or []
        answer = choices[0].message.content if choices and choices[0].message else None
        if not answer or not answer.strip():
            reply.malformed = True
            return reply
        if choices[0].finish_reason == "length":
            reply.truncated = True
            reply.unparsed, reply.rejected["truncated_output"] = 1, 1
            return reply
        reply.tasks = [Task(instruction, "", answer.strip())]
        return reply

    def dry_prompt() -> str:
        return (f"pre-query template (from {where}), sent to /completions, stop {query_stop}:\n{prefix}\n"
                f"then the instruction it writes, sent to /chat/completions for the answer")

    return Plan(build=lambda kept: Prompt(prefix, []), ask=ask, template=prefix + "\0" + "\0".join(query_stop),
                describe=lambda: "each request sends the chat template's opening"
                                 + (" with the system prompt" if system else "")
                                 + ", then the instruction the teacher wrote; no seed or record is shown",
                dry_prompt=dry_prompt, items_shown=0, redactions=lambda: redactions,
                route="completions, then chat/completions")


STYLE = Style(name="magpie", order=20, prepare=prepare, reads=("seeds", "none"),
              description="the teacher writes each instruction from its chat template's pre-query text (Magpie), "
                          "then answers it; seed-free, for small local teachers")
