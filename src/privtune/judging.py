"""An LLM judge, shared by eval (tuned vs baseline), generate --preferences (which of two of a model's own
answers) and filter (a 1-5 rating of one example): the prompts, one request, the verdict's and score's
parsing, and a win rate's interval."""

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


RATING_PROMPT = """You are checking one example of training data for an assistant. Rate it from 1 (useless or wrong) to 5 (excellent): is the request clear, is any input in it consistent with the request, and is the response correct and complete?

Request:
{prompt}

Response:
{response}

Give one short sentence of reasoning, then a last line of exactly "Score: N" with N from 1 to 5."""


def ask(client, endpoint: Endpoint, text: str, seed: int) -> str:
    """The judge's reply to one prompt, at temperature 0. A refusal (auth, permission, unknown model) stops the
    run with a clear error; other API errors are the caller's to count."""
    import openai

    try:
        reply = client.chat.completions.create(model=endpoint.model, temperature=0, seed=seed,
                                               messages=[{"role": "user", "content": text}])
    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
        raise PrivtuneError(f"the judge at {endpoint.host} refused the request: {endpoint.redact(str(exc))[:200]}",
                            field="--judge-model") from None
    return (reply.choices[0].message.content if reply.choices else "") or ""


def ask_judge(client, endpoint: Endpoint, text: str, seed: int) -> tuple[str | None, str]:
    """The judge's verdict on one comparison ("A", "B", "tie", or None when its last line says none of these)
    and its whole reply."""
    content = ask(client, endpoint, text, seed)
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


_SCORE = re.compile(r"\bscore\s*[:=]\s*\**\s*([1-5])(?:\s*/\s*5)?\b", re.IGNORECASE)


def parse_score(text: str) -> int | None:
    """1-5 from a rating's last "Score: N" (N/5 accepted); None when the reply gives none."""
    found = _SCORE.findall(text or "")
    if found:
        return int(found[-1])
    stripped = (text or "").strip().splitlines()[-1].strip(" .*") if (text or "").strip() else ""
    return int(stripped) if stripped in {"1", "2", "3", "4", "5"} else None
