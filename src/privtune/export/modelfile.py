"""Ollama's Modelfile from the model's own chat template: TEMPLATE, SYSTEM and the stop strings.

An exported model that rambles past its answer is nearly always a Modelfile without the chat template's
turn markers or without `PARAMETER stop` for its end-of-turn token. Nothing here is written by hand:
the Jinja template is rendered with placeholder strings and cut at the placeholders, so the Go template
reproduces exactly what the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from privtune.errors import PrivtuneError

SYSTEM, USER, ANSWER = "\x00S\x00", "\x00U\x00", "\x00A\x00"


@dataclass
class OllamaTemplate:
    """The pieces of a Modelfile that come from the chat template."""

    template: str
    """Go template over .System, .Prompt and .Response."""
    system: str | None
    """The system prompt the chat template adds when none is given (SmolLM2's, Qwen's), else None."""


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _split(text: str, *markers: str) -> list[str]:
    """`text` cut at each marker in order; an error when a marker is missing or repeated."""
    parts = []
    for marker in markers:
        if text.count(marker) != 1:
            raise ValueError(f"the template does not place {marker!r} exactly once")
        head, text = text.split(marker)
        parts.append(head)
    return [*parts, text]


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n:] if n else ""


def _go(text: str) -> str:
    """Literal text inside a Go template: `{{` would start an action."""
    return text.replace("{{", '{{ "{{" }}')


def derive_template(tokenizer) -> OllamaTemplate:
    """Go template equivalent to the tokenizer's chat template for one system + user + assistant turn.

    Rendered with a system turn: P_s S B U G; without: P_n U G; a finished answer adds A E after G.
    Without a default system prompt, P_n = C + (user opening) where B ends in that opening, so
    `C{{ if .System }}...{{ .System }}...{{ end }}...{{ .Prompt }}G{{ .Response }}E`. A template that
    injects a default renders P_n = P_s + D + B: then the Modelfile says SYSTEM D and .System is always set.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise PrivtuneError("the model has no chat template, so the Modelfile cannot have a TEMPLATE",
                            field="MODEL", hint="give the model a template first (privtune prep --template) "
                                                "or write the Modelfile's TEMPLATE by hand")
    user = [{"role": "user", "content": USER}]
    try:
        p_n, g_n = _split(_render(tokenizer, user, True), USER)
        answered = _render(tokenizer, [*user, {"role": "assistant", "content": ANSWER}], False)
        head, end = _split(answered, ANSWER)
        if head != p_n + USER + g_n:
            raise ValueError("the generation prompt differs from an answered turn's assistant header")
    except Exception as exc:  # a template that raises on this conversation (Jinja errors vary) or splits oddly
        raise PrivtuneError(f"cannot derive an Ollama TEMPLATE from the chat template: {exc}", field="MODEL",
                            hint="write the Modelfile's TEMPLATE by hand") from None
    answer = f"{_go(g_n)}{{{{ .Response }}}}{_go(end)}"
    try:
        p_s, b, g = _split(_render(tokenizer, [{"role": "system", "content": SYSTEM}, *user], True), SYSTEM, USER)
    except Exception:  # a template without system turns (e.g. one that raises on them)
        return OllamaTemplate(f"{_go(p_n)}{{{{ .Prompt }}}}{answer}", None)
    if g != g_n:
        raise PrivtuneError("cannot derive an Ollama TEMPLATE: the assistant header depends on the system turn",
                            field="MODEL", hint="write the Modelfile's TEMPLATE by hand")
    if p_n.startswith(p_s) and p_n.endswith(b) and len(p_n) > len(p_s) + len(b):
        default = p_n[len(p_s):len(p_n) - len(b)]
        return OllamaTemplate(f"{_go(p_s)}{{{{ .System }}}}{_go(b)}{{{{ .Prompt }}}}{answer}", default)
    opening = _common_suffix(p_n, b)
    common = p_n[:len(p_n) - len(opening)]
    if not p_s.startswith(common):
        raise PrivtuneError("cannot derive an Ollama TEMPLATE: the system turn changes the text before it",
                            field="MODEL", hint="write the Modelfile's TEMPLATE by hand")
    system = f"{{{{ if .System }}}}{_go(p_s[len(common):])}{{{{ .System }}}}{_go(b[:len(b) - len(opening)])}{{{{ end }}}}"
    return OllamaTemplate(f"{_go(common)}{system}{_go(opening)}{{{{ .Prompt }}}}{answer}", None)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _triple(text: str, what: str) -> str:
    if '"""' in text:
        raise PrivtuneError(f'the {what} contains """, which a Modelfile cannot quote', field="MODEL")
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, template: OllamaTemplate, stops: list[str]) -> str:
    """The Modelfile: FROM the GGUF beside it, the chat template, the default system prompt, the stops."""
    lines = [f"FROM ./{gguf_name}", "", f"TEMPLATE {_triple(template.template, 'chat template')}"]
    if template.system is not None:
        lines.append(f"SYSTEM {_triple(template.system, 'default system prompt')}")
    lines.append("")
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


def stop_strings(tokenizer, ids: list[int]) -> list[str]:
    """The text of each stop token (special tokens kept), once each: what Ollama compares the output with."""
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return [t for t in dict.fromkeys(texts) if t]
