"""Best-effort masking of personal data and secrets in text sent to a teacher (`--redact`).

Regular expressions, not a trained recogniser: they catch the common shapes (e-mail addresses,
phone numbers, card and account numbers, IP addresses, API-key-like strings) and miss names and
free-form identifiers. The README says so.
"""

from __future__ import annotations

import re

PATTERNS = [
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("API_KEY", re.compile(r"\b(?:sk|pk|rk|hf|ghp|gho|xox[bp])[-_][A-Za-z0-9_-]{16,}\b|\bAKIA[0-9A-Z]{16}\b")),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b")),
    ("CARD", re.compile(r"\b(?:\d[ -]?){13,19}\b")),
    ("IP", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}\b")),
    ("PHONE", re.compile(r"(?<![\w])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}[\s.-]\d{3,4}[\s.-]?\d{2,4}\b")),
    ("ACCOUNT", re.compile(r"\b\d{8,}\b")),
]


def redact(text: str) -> tuple[str, int]:
    """`text` with each match replaced by [KIND], and how many were replaced."""
    total = 0
    for kind, pattern in PATTERNS:
        text, count = pattern.subn(f"[{kind}]", text)
        total += count
    return text, total
