"""An LLM judge's pairwise verdicts, shared by eval (tuned vs baseline) and generate --preferences (which of
two of a model's own answers): the prompt, one request, the verdict's parsing, and a win rate's interval."""

from __future__ import annotations

import re

from privtune.endpoint import Endpoint
from privtune.errors import PrivtuneError

PROMPT = """You are comparing two answers to the same request. Judge which answer is more helpful, correct and faithful to the reference.

Request:
{prompt}

Reference answer:
{reference}

Answer A:
{a}

Answer B:
{b}

Give one short sentence of reasoning, then a last line of exactly "Winner: A", "Winner: B" or "Winner: tie"."""


def ask_judge(client, endpoint: Endpoint, text: str, seed: int) -> tuple[str | None, str]:
    """The judge's verdict on one comparison ("A", "B", "tie", or None when its last line says none of these)
    and its whole reply. A refusal (auth, permission, unknown model) stops the run with a clear error;
    other API errors are the caller's to count."""
    import openai

    try:
        reply = client.chat.completions.create(model=endpoint.model, temperature=0, seed=seed,
                                               messages=[{"role": "user", "content": text}])
    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
        raise PrivtuneError(f"the judge at {endpoint.host} refused the request: {endpoint.redact(str(exc))[:200]}",
                            field="--judge-model") from None
    content = (reply.choices[0].message.content if reply.choices else "") or ""
    return parse_verdict(content.strip().splitlines()[-1] if content.strip() else ""), content


def wilson_interval(wins: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a win rate (ties count half)."""
    if total == 0:
        return 0.0, 1.0
    p = wins / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


_VERDICT = re.compile(r"\b(?:winner|verdict|answer)\s*[:=]\s*\**\s*(A|B|tie)\b", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from a judge's reply; None when it does not say in the expected form."""
    match = _VERDICT.search(text or "")
    if match:
        value = match.group(1)
        return "tie" if value.lower() == "tie" else value.upper()
    stripped = (text or "").strip().strip(".*").upper()
    return {"A": "A", "B": "B", "TIE": "tie"}.get(stripped)
