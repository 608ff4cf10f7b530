"""Write data/tickets.jsonl: synthetic support tickets for the "enough data" demo.

Each record is Alpaca-shaped: classify a short ticket into a category and a priority, answered as
JSON. The label is a deterministic function of words in the ticket, so a small model can visibly
learn it on CPU. Re-run to regenerate: `python data/make_tickets.py`.
"""

import json
import random
from pathlib import Path

CATEGORIES = {
    "billing": ["I was charged twice for my {plan} plan", "my invoice for {month} shows the wrong amount",
                "the card payment for my {plan} subscription failed", "why did my bill go up in {month}"],
    "login": ["I can't log in to my account", "the password reset email never arrives",
              "two-factor codes are rejected when I sign in", "my account is locked after the {month} update"],
    "shipping": ["my order #{order} has not arrived", "the tracking number for order #{order} does not work",
                 "the parcel for order #{order} was delivered to the wrong address", "order #{order} shipped without the charger"],
    "bug": ["the app crashes when I open the {screen} screen", "the {screen} page shows an error 500",
            "exporting from the {screen} view produces an empty file", "the {screen} button does nothing on Android"],
    "refund": ["I want my money back for order #{order}", "please refund the {plan} plan I cancelled",
               "I returned order #{order} but got no refund", "how do I get a refund for the {month} charge"],
    "feature_request": ["could you add dark mode to the {screen} screen", "please support CSV import in {screen}",
                        "it would be great to have a {screen} widget", "can you add a yearly option to the {plan} plan"],
}
PRIORITY_WORDS = {
    "high": ["This is urgent.", "Please fix this ASAP.", "We are blocked right now.", "Our whole team is down."],
    "medium": ["Thanks for looking into it.", "Can you help?", "Please advise.", ""],
    "low": ["No rush.", "Whenever you have time.", "Just curious.", "Low priority for us."],
}
SLOTS = {"plan": ["Basic", "Pro", "Team", "Enterprise"], "month": ["January", "March", "June", "October"],
         "screen": ["settings", "dashboard", "reports", "billing"], "order": ["1042", "2291", "3317", "4580", "5123"]}
GREETINGS = ["Hi,", "Hello team,", "Hey,", ""]
INSTRUCTION = "Classify the support ticket. Answer with JSON: category and priority."


def make_ticket(rng: random.Random) -> dict:
    category = rng.choice(sorted(CATEGORIES))
    priority = rng.choice(["high", "medium", "medium", "low"])
    body = rng.choice(CATEGORIES[category]).format(**{k: rng.choice(v) for k, v in SLOTS.items()})
    text = " ".join(p for p in [rng.choice(GREETINGS), body[0].upper() + body[1:] + ".",
                                rng.choice(PRIORITY_WORDS[priority])] if p)
    answer = json.dumps({"category": category, "priority": priority})
    return {"instruction": INSTRUCTION, "input": text, "output": answer}


def main() -> None:
    rng = random.Random(7)
    seen, records = set(), []
    while len(records) < 600:
        record = make_ticket(rng)
        if record["input"] not in seen:
            seen.add(record["input"])
            records.append(record)
    out = Path(__file__).with_name("tickets.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} records to {out}")


if __name__ == "__main__":
    main()
