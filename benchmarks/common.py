"""Shared pieces of the benchmarks: result rows, the tiny model, Alpaca-like records.

Every benchmark's data is made here or in the benchmark itself, deterministically, from nothing
outside the project: the same records on every machine, so rows measure the same thing everywhere.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "bench-out"


@dataclass
class Row:
    """One line of the table: what privtune did against what baseline, and the target."""

    benchmark: str
    privtune: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def tiny_model() -> Path:
    """The offline base model, built once into bench-out/."""
    from privtune.models.tiny import build_tiny_model

    path = OUT / "tiny-model"
    if not (path / "config.json").is_file():
        root = Path(__file__).resolve().parents[1]
        build_tiny_model(path, [root / "data" / "tickets.jsonl", root / "data" / "seeds.jsonl"])
    return path


# Self-instruct-like data. An LLM asked for new tasks in the style of a few seed tasks writes
# instructions that resemble each other: the same verbs, forms and phrasings over varied topics,
# some asking about a given input. Here the "seed tasks" are these templates, and each slot is
# filled from the lists below (all written for the benchmarks). Only random.Random's integer and
# random() draws and float products are used: the same data on every machine and Python 3.11+.

_SLOTS = {
    "topic": "climate change|machine learning|the French Revolution|a healthy breakfast|remote work|public "
             "transport|photosynthesis|a job interview|personal finance|time management|the water cycle|social "
             "media|renewable energy|the stock market|meditation|online privacy|space exploration|the Roman "
             "Empire|electric cars|recycling|urban gardening|the immune system|cloud computing|jazz music|"
             "volcanoes|the human brain|customer service|a first apartment|learning to code|ancient Egypt|"
             "black holes|team meetings|the printing press|coffee|marathon training|honeybees|inflation|"
             "video games|the ocean tides|a small business|vaccines|the Olympic Games|password security|"
             "sleep|chess|plastic pollution|the internet|volunteering|a road trip|artificial intelligence|"
             "democracy|the moon landing|friendship|houseplants|digital cameras|the solar system|job "
             "burnout|public libraries|bread baking|earthquakes|cryptocurrency|the Renaissance|mobile apps|"
             "composting|wildfires|the metric system|board games|electric guitars|the Silk Road|rainforests|"
             "minimalism|tax returns|quantum computing|birdwatching|fast fashion|the Great Wall of China|"
             "carbon taxes|street food|the Industrial Revolution|gene editing|self-driving cars|coral reefs|"
             "opera|the periodic table|online dating|antibiotics|three-day weekends|the gig economy|glaciers|"
             "typography|vegetarian cooking|nuclear power|the Cold War|dinosaurs|open-source software|"
             "mindfulness at work|the housing market|sign language|bicycles|origami|3D printing|"
             "household budgets|pet adoption|the Amazon river|wind turbines|classical architecture",
    "form": "poem|short story|haiku|blog post|tweet|product description|cover letter|email|speech|limerick|"
            "news headline|essay outline|dialogue|recipe|movie review|slogan|riddle|joke|letter|song chorus|"
            "job posting|press release|lesson plan|travel itinerary|FAQ|quiz",
    "adj": "short|funny|creative|detailed|simple|catchy|thoughtful|persuasive|formal|friendly|concise|vivid",
    "audience": "a five-year-old|a high school student|a new employee|a busy parent|a software engineer|a "
                "beginner|a customer|your manager|a tourist|a retiree|a teenager|a doctor|a history teacher",
    "n": "two|three|four|five|six|seven|ten|3|5|10",
    "activity": "learn a new language|save money|sleep better|stay focused|cook for a family|train for a "
                "marathon|write clean code|make friends in a new city|prepare for an exam|reduce stress|"
                "start a podcast|grow tomatoes|negotiate a salary|plan a wedding|speak in public|keep a "
                "journal|organize a closet|fix a leaking tap|study for long hours|travel on a budget|"
                "write a resume|quit sugar|paint a landscape|adopt a rescue dog|run a book club|"
                "repair a flat tyre|memorize a speech|brew beer at home|choose a laptop|raise chickens",
    "things": "ideas|questions|names|reasons|examples|mistakes|benefits|challenges|tools|books|activities|"
              "facts|myths|tips|arguments|keywords",
    "doc": "article|paragraph|email|sentence|review|passage|conversation|tweet|news story|abstract|poem|"
           "product description|list",
    "style": "formal|polite|concise|persuasive|friendly|professional|humorous|neutral|positive|academic",
    "language": "French|Spanish|German|Japanese|Italian|Portuguese|Dutch|Korean",
    "labels": "positive or negative|fact or opinion|spam or not spam|formal or informal|true or false|"
              "a question or a statement|happy, sad or angry|sports, politics or technology",
    "item": "tweet|sentence|review|product|animal|word|number|email subject|headline|movie",
    "occasion": "a birthday party|a rainy weekend|a team offsite|a family reunion|a wedding|a school "
                "fundraiser|a long flight|a holiday dinner",
    "property": "main idea|grammatical errors|named entities|odd one out|tone|key points|verbs|longest word|"
                "logical fallacy|dates",
    "preface": "I have a meeting with {audience} tomorrow.|My friend asked me about {topic}.|I am preparing a "
               "presentation on {topic}.|I am writing a book about {topic}.|My {n} colleagues want to "
               "{activity}.|I only have {n} minutes.|Last week my neighbour, who is {audience}, told me "
               "that she wants to {activity} before the end of the year, and I promised to help her.|Our "
               "class is getting ready for {occasion}, and we want to talk about {topic}.|"
               "Imagine you are {audience} who has never heard of {topic}.",
    "constraint": "Keep it under {n} sentences.|Use simple language.|Include at least one example.|Answer in a "
                  "bulleted list.|Make it suitable for {audience}.|Explain your reasoning step by step.|Avoid "
                  "technical jargon.|Respond in a {style} tone.|Do not use more than {n} words per line.|Mention "
                  "{topic} at least once, but do not make it the main subject.|Finish with a short question "
                  "that invites the reader to share their own experience.|Number each point.",
}
_SLOTS = {name: words.split("|") for name, words in _SLOTS.items()}

# (template, needs an input, output kind): "label" answers are a few words, "list" numbered lines.
_TEMPLATES = [
    ("Write a {form} about {topic}.", False, "prose"),
    ("Write a {adj} {form} about {topic} for {audience}.", False, "prose"),
    ("Compose a {adj} {form} that mentions {topic}.", False, "prose"),
    ("Explain {topic} to {audience}.", False, "prose"),
    ("Explain how {topic} works in {n} sentences.", False, "prose"),
    ("Give {n} tips to {activity}.", False, "list"),
    ("List {n} {things} related to {topic}.", False, "list"),
    ("Brainstorm a list of {things} for {occasion}.", False, "list"),
    ("Suggest {n} ways to {activity}.", False, "list"),
    ("What is the difference between {topic} and {topic}?", False, "prose"),
    ("How do you {activity}?", False, "prose"),
    ("Is there a way to {activity} without spending money?", False, "prose"),
    ("Describe a situation in which {topic} can help you.", False, "prose"),
    ("Why is {topic} important for {audience}?", False, "prose"),
    ("Create a {form} for {occasion}.", False, "prose"),
    ("Generate {n} {things} that {audience} might ask about {topic}.", False, "list"),
    ("Come up with a {adj} name for a company about {topic}.", False, "label"),
    ("Tell me a fun fact about {topic}.", False, "prose"),
    ("Summarize the following {doc} in {n} sentences.", True, "prose"),
    ("Summarize the given {doc}.", True, "prose"),
    ("Classify the following {item} as {labels}.", True, "label"),
    ("Decide whether the given {item} is {labels}.", True, "label"),
    ("Rewrite the following sentence to make it more {style}.", True, "prose"),
    ("Rewrite the given {doc} in a {style} tone.", True, "prose"),
    ("Translate the following sentence into {language}.", True, "prose"),
    ("Generate a {adj} title for the following {doc}.", True, "label"),
    ("Find the {property} in the given {doc}.", True, "list"),
    ("Identify the {property} of the following {doc}.", True, "list"),
    ("Correct the grammatical errors in the following {doc}.", True, "prose"),
    ("Answer the question based on the given {doc}.", True, "prose"),
    ("Extract {n} {things} from the following {doc}.", True, "list"),
    ("Sort the following items from least to most important.", True, "list"),
    ("Suppose you are {audience} who wants to {activity}. Write a {form} that explains your plan, mentions "
     "{topic}, and ends with a question for the reader.", False, "prose"),
    ("You are planning {occasion} on a tight budget. Suggest a schedule, a menu and {n} activities that would "
     "keep {audience} entertained for the whole day.", False, "list"),
    ("Imagine that {topic} did not exist. Describe how daily life would be different for {audience}, and give "
     "{n} concrete examples.", False, "prose"),
    ("Write a step-by-step guide that helps {audience} {activity}, including the tools needed, the most "
     "common mistakes and how long each step usually takes.", False, "list"),
    ("Read the following {doc} and decide whether the argument about {topic} is convincing. Point out its "
     "strongest and weakest parts.", True, "prose"),
    ("Pretend you are an expert in {topic}. Answer the following question from {audience} in a {style} way, "
     "giving at least {n} reasons.", True, "prose"),
    ("Is there anything I can do to {activity} that does not take more than {n} minutes a day?", False, "prose"),
    ("Here is a {doc} I wrote about {topic}. Can you make it shorter?", True, "prose"),
]
_INPUT_TEMPLATES = [t for t in _TEMPLATES if t[1]]
_PLAIN_TEMPLATES = [t for t in _TEMPLATES if not t[1]]

_SUBJECTS = ("the team|everyone|this approach|a typical customer|the new policy|a good plan|the research group|"
             "the city|the average student|the report|every beginner|a small change|the first step|an expert|"
             "your manager|the main problem|this method|the community|a simple habit|the final draft").split("|")
_VERBS = ("improves|depends on|changes|supports|reduces|explains|requires|affects|highlights|creates|protects|"
          "replaces|shapes|simplifies|measures|limits|connects|reveals|encourages|delays").split("|")
_OBJECTS = ("the way we work|daily habits|long-term costs|public health|the quality of the results|local "
            "businesses|the amount of waste|our shared goals|the schedule|the next generation|clear "
            "communication|the budget|everyday decisions|the risk of mistakes|the whole process|new "
            "opportunities|the original idea|the environment|the learning curve|trust").split("|")
_TAILS = ("over time|in most cases|because it saves time|for small businesses|when resources are limited|"
          "without much effort|during the first year|more than expected|in a surprising way|for everyone "
          "involved|if you plan ahead|at a lower cost|as the evidence shows|in the long run").split("|")


def _fill(text: str, rng: random.Random) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: rng.choice(_SLOTS[m.group(1)]), text)


def _sentence(rng: random.Random, topic: str | None = None) -> str:
    words = [topic or rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.6:
        words.append(rng.choice(_TAILS))
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _prose(rng: random.Random, words: int, topic: str) -> str:
    sentences, count = [], 0
    while count < words:
        sentence = _sentence(rng, topic if rng.random() < 0.15 else None)
        sentences.append(sentence)
        count += len(sentence.split())
    # paragraphs of 3-6 sentences
    out, i = [], 0
    while i < len(sentences):
        step = rng.randint(3, 6)
        out.append(" ".join(sentences[i:i + step]))
        i += step
    return "\n\n".join(out)


def _cube(u: float) -> float:
    return u * u * u  # products are exactly rounded everywhere; ** goes through the C library's pow


def _output_words(rng: random.Random) -> int:
    """Many short, some medium, a long tail to 750 words (~1,000 tokens of a common BPE tokenizer)."""
    kind, u = rng.random(), rng.random()
    if kind < 0.55:
        return 5 + int(55 * u * u)
    if kind < 0.9:
        return 40 + int(160 * u)
    return 200 + int(550 * u * u)


def self_instruct_instructions(count: int, rng: random.Random) -> list[tuple[str, bool, str]]:
    """(instruction, needs an input, output kind) for `count` tasks; ~40% need an input."""
    out = []
    for _ in range(count):
        template, needs_input, kind = rng.choice(_INPUT_TEMPLATES if rng.random() < 0.4 else _PLAIN_TEMPLATES)
        parts = [template]
        for _ in range(2):
            if rng.random() < 0.05:
                parts.insert(0, rng.choice(_SLOTS["preface"]))
            if rng.random() < 0.1:
                parts.append(rng.choice(_SLOTS["constraint"]))
        out.append((_fill(" ".join(parts), rng), needs_input, kind))
    return out


def alpaca_like_records(count: int, seed: int = 0) -> tuple[list[dict], str]:
    """Alpaca-shaped {instruction, input, output} records shaped like self-instruct output.

    Self-similar instructions from the templates above (~40% with an input of one sentence to a few
    paragraphs), outputs of varied length: many short, a long tail to 750 words. Returns the records
    and where they come from (the generator, the seed, a digest of the data), read after "records "."""
    rng = random.Random(seed)
    records = []
    for instruction, needs_input, kind in self_instruct_instructions(count, rng):
        topic = rng.choice(_SLOTS["topic"])
        given = ""
        if needs_input:
            u = rng.random()
            given = (_sentence(rng) if u < 0.5 else
                     ", ".join(rng.choice(_OBJECTS) for _ in range(rng.randint(3, 8))) if u < 0.6 else
                     _prose(rng, 20 + int(280 * _cube(rng.random())), topic))
        if kind == "label":
            output = " ".join(rng.choice(_OBJECTS).split()[: rng.randint(1, 4)]).capitalize()
        elif kind == "list":
            target, lines = _output_words(rng), []
            while sum(len(line.split()) for line in lines) < target:
                lines.append(f"{len(lines) + 1}. {_sentence(rng, topic if rng.random() < 0.2 else None)}")
            output = "\n".join(lines)
        else:
            output = _prose(rng, _output_words(rng), topic)
        records.append({"instruction": instruction, "input": given, "output": output})
    digest = hashlib.sha256("".join(json.dumps(r, sort_keys=True) for r in records).encode()).hexdigest()[:12]
    return records, (f"from the synthetic self-instruct-like generator (benchmarks/common.py, seed {seed}, "
                     f"sha256 {digest})")
