"""Pairwise LLM-as-judge through any OpenAI-compatible endpoint, position bias cancelled by swapping."""

from __future__ import annotations

import json
from pathlib import Path

from privtune.endpoint import Endpoint
from privtune.judging import PROMPT, ask_judge, wilson_interval
from privtune.ui import track


def run_judge(endpoint: Endpoint, rows: list[dict], tuned: list[str], baseline: list[str], folder: Path,
              seed: int) -> dict:
    """Judge every pair; tuned is answer A on even pairs and B on odd ones."""
    import openai

    client = endpoint.client()
    wins = ties = losses = unparsed = failed = 0
    with open(folder / "judge.jsonl", "w", encoding="utf-8") as log:
        for index, row in enumerate(track(rows, "judging")):
            swapped = index % 2 == 1
            a, b = (baseline[index], tuned[index]) if swapped else (tuned[index], baseline[index])
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"][:-1])
            text = PROMPT.format(prompt=prompt, reference=row["messages"][-1]["content"], a=a, b=b)
            try:
                verdict, content = ask_judge(client, endpoint, text, seed)
            except openai.APIError as exc:
                failed += 1
                log.write(json.dumps({"index": index, "error": endpoint.redact(str(exc))[:300]}) + "\n")
                continue
            winner = None if verdict is None else "tie" if verdict == "tie" else \
                ("tuned" if (verdict == "A") != swapped else "baseline")
            if winner is None:
                unparsed += 1
            elif winner == "tie":
                ties += 1
            elif winner == "tuned":
                wins += 1
            else:
                losses += 1
            log.write(json.dumps({"index": index, "swapped": swapped, "verdict": verdict, "winner": winner,
                                  "reason": content}, ensure_ascii=False) + "\n")
    client.close()
    decided = wins + ties + losses
    low, high = wilson_interval(wins + ties / 2, decided)
    return {"model": endpoint.model, "host": endpoint.host, "wins": wins, "ties": ties, "losses": losses,
            "unparsed": unparsed, "failed": failed, "decided": decided,
            "win_rate": (wins + ties / 2) / decided if decided else 0.0, "ci_low": low, "ci_high": high}
