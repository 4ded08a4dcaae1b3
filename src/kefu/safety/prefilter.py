"""Which of many patterns can match a message, in one pass: RE2's filtered matcher in front of Python's `re`.

The injection rules are a hundred-odd Python regular expressions. Searching a message with each in turn costs most
of a millisecond, on every turn, and nearly every ordinary message matches none of them. RE2 (PyPI `google-re2`)
tells which of a set of patterns may match in one pass over the text, in tens of microseconds.

RE2 lacks some of Python's syntax (lookarounds) and reads some of it differently (`\\b`, `\\w`, `\\d` and `\\s` are
ASCII-only in RE2, Unicode in Python). So each pattern is translated into a *wider* RE2 pattern, one that matches
wherever the Python pattern matches and perhaps elsewhere too: assertions RE2 cannot express (`\\b`, lookarounds)
are dropped, `^` and `$` (and `\\A`, `\\Z`) match at every line, counted repeats become `*`, character classes get
their Unicode meaning. The filter tells which
patterns may match; Python's own pattern then decides each of those, so the verdicts are exactly what searching
with every pattern would give. A pattern that does not translate is always searched; a text RE2 cannot read, or a
filter match that fails, falls back to searching with every pattern.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TypeVar

import re2

T = TypeVar("T")

log = logging.getLogger(__name__)

# Python's \w, \d and \s (Unicode, for str patterns) in RE2's syntax; inside and outside a character class.
_WORD = r"\p{L}\p{N}_"
_DIGIT = r"\p{Nd}"
_SPACE = r"\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}"
_OUTSIDE_CLASS = {"b": "", "B": "", "w": f"[{_WORD}]", "d": _DIGIT, "s": f"[{_SPACE}]", "Z": "$", "A": "^"}
_INSIDE_CLASS = {"b": r"\x{08}", "w": _WORD, "d": _DIGIT, "s": _SPACE}
# \W, \D and \S stay as they are: RE2's (not an ASCII word character, digit, space) already match more than Python's.
_LOOKAROUNDS = ("(?=", "(?!", "(?<=", "(?<!")
_HEX_ESCAPES = {"u": 4, "U": 8}
"""Python's escapes by code point that RE2 spells `\\x{...}`, and their number of hex digits."""
_COUNTED = re.compile(r"\{\d*(,\d*)?\}\??")
_MAX_MEM = 64 << 20
"""RE2's memory budget per pattern (bytes)."""
_SENTINEL = "\nkefu-prefilter-sentinel"
"""Appended to each text on its own line; `$` and `^` match at every line, so no pattern matches less for it."""


def _class_body(pattern: str, start: int) -> int:
    """Where a character class's members begin, `start` being just past its "[": after a negating "^", and after a
    "]" that comes first (Python reads that one as a literal)."""
    if pattern.startswith("^", start):
        start += 1
    if pattern.startswith("]", start):
        start += 1
    return start


def _group_end(pattern: str, start: int) -> int:
    """The index just past the group that opens at `start` (escapes and character classes respected)."""
    depth, i, in_class = 0, start, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            i = _class_body(pattern, i + 1) - 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced group at {start}")


def widen_for_re2(pattern: str) -> str:
    """An RE2 pattern that matches at least wherever the Python `pattern` does (see the module's docstring)."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            letter = pattern[i + 1 : i + 2]
            hex_digits = _HEX_ESCAPES.get(letter)
            if hex_digits:  # \u4e00 (Python's) is \x{4e00} in RE2
                out.append(f"\\x{{{pattern[i + 2 : i + 2 + hex_digits]}}}")
                i += 2 + hex_digits
                continue
            table = _INSIDE_CLASS if in_class else _OUTSIDE_CLASS
            out.append(table.get(letter, char + letter))
            i += 2
            continue
        if in_class:
            in_class = char != "]"
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            body = _class_body(pattern, i + 1)
            out.append("[" + pattern[i + 1 : body].replace("]", r"\]"))  # "[^]": a leading "]" is a literal
            i = body
            continue
        if pattern.startswith(_LOOKAROUNDS, i):
            i = _group_end(pattern, i)  # a zero-width condition: without it the pattern matches more, never less
            continue
        counted = _COUNTED.match(pattern, i)
        if counted:
            # x{0,30} becomes x*: counted repeats multiply the automaton's states, and x* matches more, never less.
            out.append("*")
            i = counted.end()
            continue
        out.append(char)
        i += 1
    return "(?m)" + "".join(out)


class PatternSet:
    """Tells, in one pass over a text, which of `patterns` may match it (a superset of those that do).

    RE2's filtered matcher (`re2.Filter`) first finds which literal pieces of the patterns occur in the text (one
    pass of a set of literals), then runs only the RE2 patterns whose pieces all occur. A single set of all the
    patterns would be one automaton, but theirs multiply: most carry `.*`-like gaps (measured: slower than Python).
    """

    def __init__(self, patterns: Sequence[re.Pattern[str]]) -> None:
        options = re2.Options()
        options.case_sensitive = False  # for every pattern: wider still where a Python pattern minds case
        options.max_mem = _MAX_MEM
        options.log_errors = False  # a pattern RE2 rejects is logged once below, in words
        self._always: list[int] = []
        """Patterns RE2 cannot take: always searched."""
        self._filter = re2.Filter()
        self._index: dict[int, int] = {}
        for index, pattern in enumerate(patterns):
            try:
                if pattern.flags & re.VERBOSE:
                    raise ValueError("verbose patterns are not RE2 syntax")
                widened = widen_for_re2(pattern.pattern)
                slot = self._filter.Add("(?s)" + widened if pattern.flags & re.DOTALL else widened, options)
            except (ValueError, re2.error) as exc:
                log.warning("pattern %d is searched on every text (RE2 cannot take it: %s)", index, exc)
                self._always.append(index)
                continue
            self._index[slot] = index
        # A literal appended to every text: a match without it is a failed search, not a text no pattern matches.
        self._sentinel = self._filter.Add(re2.escape(_SENTINEL), options)
        self._filter.Compile()

    def candidates(self, text: str) -> list[int] | None:
        """The patterns that may match `text`, in their order; None: search with all of them."""
        try:
            matched = self._filter.Match(text + _SENTINEL, False)
        except UnicodeEncodeError:  # a lone surrogate: not UTF-8, RE2 cannot read it
            return None
        if not matched or self._sentinel not in matched:
            return None
        found = [self._index[slot] for slot in matched if slot != self._sentinel]
        return sorted(found + self._always)

    def select(self, items: Sequence[T], text: str) -> Sequence[T]:
        """Of `items` (one per pattern, in the patterns' order), those whose pattern may match `text`."""
        candidates = self.candidates(text)
        return items if candidates is None else [items[i] for i in candidates]
