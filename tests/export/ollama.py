"""Render an Ollama Go TEMPLATE of the .System/.Prompt/.Response kind by plain substitution."""

import re


def fill(template: str, system: str | None, prompt: str, response: str = "") -> str:
    """What Ollama renders: the `{{ if .System }}` block kept only when there is a system prompt."""
    if system:
        text = template.replace("{{ if .System }}", "").replace("{{ end }}", "")
    else:
        text = re.sub(r"\{\{ if \.System \}\}.*?\{\{ end \}\}", "", template, flags=re.DOTALL)
    return text.replace("{{ .System }}", system or "").replace("{{ .Prompt }}", prompt).replace(
        "{{ .Response }}", response)


def parse_modelfile(text: str) -> dict:
    """TEMPLATE, SYSTEM (triple-quoted) and the stop parameters of a Modelfile."""
    found = {key: value for key, value in re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""', text, re.M | re.S)}
    found["stop"] = re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)
    found["from"] = re.search(r"^FROM (.*)$", text, re.M).group(1)
    return found
