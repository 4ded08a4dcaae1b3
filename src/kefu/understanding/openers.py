"""Greetings and preambles in front of a question: what the customer wants is in what follows them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kefu.datafiles import load_yaml_model

DEFAULT_OPENERS_FILE = Path(__file__).parent / "data" / "openers.yaml"

_SEPARATORS = r"[\s,，.。!！?？~～:：、…]*"
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[A-Za-z0-9]+")


class OpenersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zh: list[str] = []
    en: list[str] = []


class Openers:
    """Finds a run of openers ("你好，请问", "Hi, quick question:") at the start of a message."""

    def __init__(self, phrases: Iterable[str]) -> None:
        unique = sorted({p.strip() for p in phrases if p.strip()}, key=len, reverse=True)
        # An English opener ends at a word boundary: "hi" is not the start of "history".
        alternatives = [re.escape(p) + (r"(?![A-Za-z])" if p[-1].isascii() and p[-1].isalpha() else "") for p in unique]
        pattern = rf"(?:(?:{'|'.join(alternatives)}){_SEPARATORS})+"
        self._pattern = re.compile(pattern, re.IGNORECASE) if unique else None

    @classmethod
    def load(cls, path: Path = DEFAULT_OPENERS_FILE) -> Openers:
        data = load_yaml_model(path, OpenersFile)
        return cls([*data.zh, *data.en])

    def read_past(self, text: str) -> str:
        """`text` without its leading openers, when what follows says something on its own (three Chinese characters
        or three words); else `text` unchanged ("你好啊客服" is a greeting)."""
        if self._pattern is None:
            return text
        start = text.lstrip()
        match = self._pattern.match(start)
        if match is None:
            return text
        rest = start[match.end() :].strip()
        if len(_CJK.findall(rest)) >= 3 or len(_WORD.findall(rest)) >= 3:
            return rest
        return text
