"""Text helpers shared by chunking, grounding and the source pages: sentences, anchors, plain text."""

from __future__ import annotations

import re
import unicodedata

from kefu.language import estimate_tokens

__all__ = ["complete_prefix", "estimate_tokens", "normalize_question", "plain_text", "slugify", "split_sentences"]

_HARD_STOPS = frozenset("。！？!?；;…")
_CLOSERS = frozenset("”’」』）)]】\"'*")
_SLUG_DROP = re.compile(r"[^\w\u3400-\u9fff\- ]+", re.UNICODE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKS = re.compile(r"(\*\*|__|`+|~~)")
_MD_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.MULTILINE)
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}.*$", re.MULTILINE)
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_SPACES = re.compile(r"[ \t\u3000]+")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def split_sentences(text: str) -> list[str]:
    """Sentences of mixed Chinese and English text, each with its end punctuation; newlines end a sentence too.

    Chinese sentences end at 。！？； with no space after them, so a regex on ". " is not enough; a full
    stop only ends an English sentence before whitespace (keeping ¥1.5, 7.5% and e.g. 1.2x whole).
    """
    sentences: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        end = -1
        if ch == "\n":
            end = i + 1
        elif ch in _HARD_STOPS or (ch == "." and (i + 1 == n or text[i + 1].isspace())):
            end = i + 1
            while end < n and (text[end] in _HARD_STOPS or text[end] in _CLOSERS):
                end += 1
        if end > 0:
            piece = text[start:end].strip()
            if piece:
                sentences.append(piece)
            start = i = end
            continue
        i += 1
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def complete_prefix(text: str) -> int:
    """Length of the part of `text` made of whole sentences (what a stream can release so far)."""
    end = 0
    n = len(text)
    for i, ch in enumerate(text):
        if ch == "\n" or ch in _HARD_STOPS or (ch == "." and i + 1 < n and text[i + 1].isspace()):
            j = i + 1
            while j < n and (text[j] in _HARD_STOPS or text[j] in _CLOSERS):
                j += 1
            if j < n or ch == "\n" or ch in _HARD_STOPS:
                end = j
    return end


def slugify(heading: str) -> str:
    """A URL fragment for a heading that keeps Chinese characters: "7 天无理由退货" → "7-天无理由退货"."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = _SLUG_DROP.sub("", text)
    return re.sub(r"[\s-]+", "-", text).strip("-") or "section"


def plain_text(markdown: str) -> str:
    """Markdown without its markup, for embedding and term matching (table pipes become spaces)."""
    text = _MD_LINK.sub(r"\1", markdown)
    text = _MD_TABLE_RULE.sub("", text)
    text = _MD_HEADING.sub("", text)
    text = _MD_LIST.sub("", text)
    text = _MD_MARKS.sub("", text)
    text = text.replace("|", " ")
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def normalize_question(text: str) -> str:
    """Case-, width- and punctuation-insensitive form of a question, for counting repeats."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).lower())
