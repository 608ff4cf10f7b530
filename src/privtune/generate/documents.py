"""Documents mode: a team's own text split into chunks the teacher writes Q&A pairs about."""

from __future__ import annotations

from pathlib import Path

from privtune.artifacts import file_sha256
from privtune.errors import PrivtuneError

SUFFIXES = (".txt", ".md", ".markdown", ".rst")


def chunk_text(text: str, limit: int) -> list[str]:
    """Paragraph-aligned chunks of at most `limit` characters (a longer paragraph is cut)."""
    chunks, current = [], ""
    for paragraph in (p.strip() for p in text.replace("\r\n", "\n").split("\n\n")):
        if not paragraph:
            continue
        while len(paragraph) > limit:
            chunks.append(paragraph[:limit])
            paragraph = paragraph[limit:]
        if current and len(current) + len(paragraph) + 2 > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks


def chunk_documents(folder: Path, limit: int) -> tuple[list[tuple[str, str]], list[dict]]:
    if not folder.is_dir():
        raise PrivtuneError("not a directory", source=str(folder), field="--docs")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise PrivtuneError(f"no documents ({', '.join(SUFFIXES)}) found", source=str(folder), field="--docs")
    chunks, inputs = [], []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise PrivtuneError("invalid UTF-8", source=str(path), line=line) from None
        chunks += [(str(path.relative_to(folder)), chunk) for chunk in chunk_text(text, limit)]
        inputs.append({"path": str(path), "sha256": file_sha256(path)})
    if not chunks:
        raise PrivtuneError("the documents are empty", source=str(folder), field="--docs")
    return chunks, inputs
