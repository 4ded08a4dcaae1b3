"""The grounding check: every number in an answer must appear in its sources, every claim must be covered by them.

A small model invents facts; the check does not trust it. Numbers, prices, dates and durations are
compared exactly (after normalising "七天", "seven days", "¥1,799.00" and "1799"); other claims must share
most of their content words with the passages they cite. What fails is never shown to the customer.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from kefu.knowledge.text import split_sentences
from kefu.knowledge.tokenizer import Tokenizer

_MARKER = re.compile(r"\s?(?:\[(\d{1,2}(?:\s*[,，、]\s*\d{1,2})*)\]|【(\d{1,2})】|\[\^(\d{1,2})\])")
_LIST_NUMBER = re.compile(r"^\s*\d{1,2}[.)、]\s+", re.MULTILINE)
_ARABIC = re.compile(r"\d[\d,]*(?:\.\d+)?")
_CLOCK = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_ZH_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
# A Chinese numeral only counts as a number before a counter or unit: "一下", "统一" and "十分" are words.
_ZH_NUMBER = re.compile(
    r"([零〇一二两三四五六七八九十百千万]+)(?=个|天|日|小时|周|星期|月|年|次|件|张|期|元|块|倍|分钟|秒|工作日|折|位|项|号|家|层|台|种)"
)
_EN_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "ninety": 90, "hundred": 100, "once": 1, "twice": 2,
}  # fmt: skip
_EN_WORD = re.compile(r"\b(" + "|".join(_EN_NUMBERS) + r")\b", re.IGNORECASE)


def _zh_numeral(text: str) -> int | None:
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            unit = _ZH_UNITS[ch]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section, digit = 0, None
            else:
                section += (1 if digit is None else digit) * unit
                digit = None
        else:
            return None
    return total + section + (digit or 0)


def _canonical(number: str) -> str:
    value = number.replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value.lstrip("0") or "0"


@functools.lru_cache(maxsize=2048)
def extract_numbers(text: str) -> frozenset[str]:
    """Canonical numbers in a text: "¥1,799.00" → "1799", "七天" → "7", "seven" → "7", "16:00" → "16:00".

    Kept for the last texts read: every grounded answer reads its passages again, and the same passages and
    answers keep coming."""
    text = unicodedata.normalize("NFKC", text)
    found: set[str] = set()
    for hour, minute in _CLOCK.findall(text):
        found.add(f"{int(hour)}:{minute}")
    text = _CLOCK.sub(" ", text)
    found.update(_canonical(m) for m in _ARABIC.findall(text))
    for match in _ZH_NUMBER.findall(text):
        value = _zh_numeral(match)
        if value is not None:
            found.add(str(value))
    found.update(str(_EN_NUMBERS[m.lower()]) for m in _EN_WORD.findall(text))
    return frozenset(found)


def strip_markers(text: str) -> str:
    """The answer without its [1]-style citation markers."""
    return re.sub(r"[ \t]+([。，！？.,!?])", r"\1", _MARKER.sub("", text)).strip()


def cited_numbers(text: str) -> list[int]:
    """Passage numbers cited in the answer, in order of first citation."""
    seen: list[int] = []
    for match in _MARKER.finditer(text):
        for group in match.groups():
            if not group:
                continue
            for part in re.split(r"[,，、]", group):
                number = int(part.strip())
                if number not in seen:
                    seen.append(number)
    return seen


@dataclass(frozen=True, slots=True)
class SentenceVerdict:
    """Whether one answer sentence is backed by the sources, and what is missing if not."""

    sentence: str
    supported: bool
    coverage: float
    missing_numbers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GroundingVerdict:
    """The whole answer's verdict; `supported` only when every sentence is."""

    sentences: tuple[SentenceVerdict, ...]
    cited: tuple[int, ...] = ()
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def supported(self) -> bool:
        return bool(self.sentences) and all(s.supported for s in self.sentences)

    def as_trace(self) -> dict[str, object]:
        return {
            "supported": self.supported,
            "cited": list(self.cited),
            "reasons": list(self.reasons),
            "sentences": [
                {"coverage": round(s.coverage, 3), "supported": s.supported, "missing_numbers": list(s.missing_numbers)}
                for s in self.sentences
            ],
        }


class GroundingChecker:
    """Checks answers against source texts: exact numbers, and content-word coverage per sentence."""

    def __init__(self, tokenizer: Tokenizer, *, min_overlap: float = 0.5, min_terms: int = 3) -> None:
        self.tokenizer = tokenizer
        self.min_overlap = min_overlap
        self.min_terms = min_terms
        """Sentences with fewer content words than this ("好的。", "Sure!") carry no claim to check."""

    def sources(self, texts: Sequence[str]) -> Sources:
        joined = "\n".join(texts)
        return Sources(numbers=extract_numbers(joined), terms=self.tokenizer.term_set(*texts))

    def check_sentence(self, sentence: str, sources: Sources) -> SentenceVerdict:
        clean = _LIST_NUMBER.sub("", strip_markers(sentence))
        missing = tuple(sorted(n for n in extract_numbers(clean) if n not in sources.numbers))
        terms = [t for t in self.tokenizer.terms(clean) if not t.replace(".", "").replace(":", "").isdigit()]
        unique = set(terms)
        coverage = len(unique & sources.terms) / len(unique) if unique else 1.0
        claim_ok = len(unique) < self.min_terms or coverage >= self.min_overlap
        return SentenceVerdict(
            sentence=sentence, supported=claim_ok and not missing, coverage=coverage, missing_numbers=missing
        )

    def check(self, answer: str, passages: Sequence[str], extra: Sequence[str] = ()) -> GroundingVerdict:
        """Check each sentence against the passages it cites ([n]); unmarked sentences against every cited
        passage of the answer (or every passage when nothing is cited). A marker to a missing passage fails."""
        cited = tuple(cited_numbers(answer))
        valid = [n for n in cited if 1 <= n <= len(passages)]
        default = self.sources([*(passages[n - 1] for n in valid), *extra] if valid else [*passages, *extra])
        verdicts = []
        reasons = []
        for sentence in split_sentences(answer):
            own = cited_numbers(sentence)
            if any(not 1 <= n <= len(passages) for n in own):
                verdicts.append(SentenceVerdict(sentence, supported=False, coverage=0.0))
                reasons.append("cites a passage that does not exist")
                continue
            sources = self.sources([*(passages[n - 1] for n in own), *extra]) if own else default
            verdict = self.check_sentence(sentence, sources)
            verdicts.append(verdict)
            if verdict.missing_numbers:
                reasons.append(f"numbers not in the cited sources: {', '.join(verdict.missing_numbers)}")
            elif not verdict.supported:
                reasons.append(f"claim not covered by the sources ({verdict.coverage:.0%} of its words)")
        return GroundingVerdict(sentences=tuple(verdicts), cited=tuple(valid), reasons=tuple(reasons))


@dataclass(frozen=True, slots=True)
class Sources:
    """What an answer may draw on: the numbers and content words of its passages."""

    numbers: frozenset[str]
    terms: frozenset[str]
