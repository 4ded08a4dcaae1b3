"""The operator-editable sensitive-word lexicon, matched with Aho-Corasick in one pass over the text."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import ahocorasick

from kefu.errors import DataFileError

DEFAULT_WORDS = Path(__file__).parent / "data" / "sensitive_words.txt"


def read_words(path: Path) -> list[str]:
    """One word per line; blank lines and lines starting with # are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataFileError(str(path), None, f"cannot read the sensitive-word list: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataFileError(str(path), None, "the sensitive-word list must be UTF-8") from None
    return [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]


class Lexicon:
    """Finds listed words in a text; ASCII words match whole words only (so 'ass' is not in 'class')."""

    def __init__(self, words: Iterable[str]) -> None:
        self._automaton = ahocorasick.Automaton()
        self.size = 0
        self.longest = 0
        for word in {w.strip().lower() for w in words if w.strip()}:
            self._automaton.add_word(word, word)
            self.size += 1
            self.longest = max(self.longest, len(word))
        if self.size:
            self._automaton.make_automaton()

    def find(self, text: str) -> list[str]:
        if not self.size:
            return []
        lowered = text.lower()
        hits: list[str] = []
        for end, word in self._automaton.iter(lowered):
            start = end - len(word) + 1
            if word.isascii() and (_wordchar(lowered, start - 1) or _wordchar(lowered, end + 1)):
                continue
            hits.append(word)
        return hits

    def incomplete_at(self, text: str) -> int | None:
        """Where a listed word may have begun at the end of `text` without being complete yet, if anywhere.

        A stream shows text only up to there, so no part of a word the rest of the text may complete is shown.
        """
        if not self.size:
            return None
        lowered = text.lower()
        for start in range(max(0, len(lowered) - self.longest + 1), len(lowered)):
            if self._automaton.match(lowered[start:]):
                return start
        return None


def _wordchar(text: str, i: int) -> bool:
    return 0 <= i < len(text) and text[i].isascii() and text[i].isalnum()
