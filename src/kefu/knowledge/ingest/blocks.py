"""Collects a document's blocks under a heading path, whatever format they were read from."""

from __future__ import annotations

from kefu.knowledge.types import Block, BlockKind


class BlockBuilder:
    """Tracks the heading path; the first top-level heading becomes the title unless one is already known."""

    def __init__(self, title: str | None = None) -> None:
        self.title = title
        self.blocks: list[Block] = []
        self._display: list[str] = []
        self._stack: list[tuple[int, str]] = []

    @property
    def section(self) -> tuple[str, ...]:
        return tuple(text for _, text in self._stack)

    def heading(self, level: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        self._display.append(f"{'#' * max(1, min(level, 6))} {text}")
        if level == 1 and self.title is None and not self.blocks and not self._stack:
            self.title = text
            return
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))

    def add(self, kind: BlockKind, text: str, *, parts: tuple[str, ...] = (), header: str = "") -> None:
        text = text.strip()
        if not text:
            return
        self.blocks.append(Block(kind=kind, text=text, section=self.section, parts=parts, header=header))
        self._display.append(text)

    def display_markdown(self) -> str:
        return "\n\n".join(self._display)


def table_markdown(rows: list[list[str]]) -> tuple[str, tuple[str, ...], str]:
    """(whole table, body rows, header + separator) as Markdown, from cell texts; the first row is the header."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(" ".join(c.split()).replace("|", "/") for c in cells) + " |"

    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return "", (), ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    header = line(rows[0]) + "\n|" + "|".join(" --- " for _ in range(width)) + "|"
    body = tuple(line(r) for r in rows[1:])
    return "\n".join([header, *body]), body, header
