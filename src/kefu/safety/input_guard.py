"""The input guard: size, control characters, gibberish, sensitive words and prompt injection."""

from __future__ import annotations

import functools
import re
import unicodedata

from kefu.safety.injection import EmbeddingInjectionClassifier, is_suspicious, reading_score
from kefu.safety.lexicon import Lexicon
from kefu.safety.normalise import read_for_detection
from kefu.safety.verdict import PASSED, GuardVerdict

MODEL_FLOOR = 0.6
"""The pattern score from which a message the patterns did not decide goes to the embedding classifier."""
# Zero-width characters are stripped before matching: they hide words from the lexicon and patterns.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_REPEAT = re.compile(r"(.)\1{24,}")
_LETTERS = re.compile(r"[A-Za-z]+")
_VOWELS = re.compile(r"[aeiouy]", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def normalise_for_matching(text: str) -> str:
    """NFKC (full-width letters become ASCII) without invisible characters: the output guard's light reading, which
    keeps the text's length so streamed replies can be cut where a word begins (the input guard reads more). Kept
    for recent texts: the same FAQ answers and passages are checked on turn after turn."""
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE)


def looks_like_gibberish(text: str) -> bool:
    """Long runs of one character, or mostly long vowel-less letter runs: keyboard mashing, not a question."""
    stripped = text.strip()
    if len(stripped) < 16:
        return False
    if _REPEAT.search(stripped):
        return True
    words = _LETTERS.findall(stripped)
    letters = sum(len(w) for w in words)
    if letters < 16 or letters < 0.6 * len(stripped.replace(" ", "")):
        return False
    mashed = sum(len(w) for w in words if len(w) >= 6 and len(_VOWELS.findall(w)) <= len(w) // 6)
    return mashed >= 0.5 * letters


class InputGuard:
    """Checks one customer message (already PII-redacted) and returns a typed verdict."""

    def __init__(
        self,
        lexicon: Lexicon,
        *,
        max_chars: int,
        classifier: EmbeddingInjectionClassifier | None = None,
    ) -> None:
        self.lexicon = lexicon
        self.max_chars = max_chars
        self.classifier = classifier

    def check_fast(self, text: str) -> tuple[GuardVerdict, bool]:
        """Every cheap check; returns (verdict, whether the embedding classifier should still look)."""
        if len(text) > self.max_chars:
            return GuardVerdict(
                True, "too_long", (f"{len(text)} > {self.max_chars} chars",), 1.0, "guard_too_long"
            ), False
        if _CONTROL.search(text):
            return GuardVerdict(
                True, "control_chars", ("control or bidi-override characters",), 1.0, "guard_invalid"
            ), False
        reading = read_for_detection(text)
        words = self.lexicon.find(reading.combined)
        if words:
            return GuardVerdict(
                True, "sensitive_word", (f"{len(words)} listed word(s)",), 1.0, "guard_sensitive"
            ), False
        injection = reading_score(reading)
        if injection.score >= 1.0:
            return GuardVerdict(
                True, "injection", injection.reasons, injection.score, _reply_for(injection.reasons)
            ), False
        if looks_like_gibberish(reading.text):
            return GuardVerdict(True, "gibberish", ("no recognisable words",), 1.0, "guard_gibberish"), False
        # Only a strong partial match (MODEL_FLOOR <= score < 1) pays for the embedding model: one weak signal, which
        # an ordinary message may well carry ("as agreed with your colleague…"), does not.
        needs_model = self.classifier is not None and injection.score >= MODEL_FLOOR and is_suspicious(reading.combined)
        return GuardVerdict(False, reasons=injection.reasons, score=injection.score), needs_model

    def check_model(self, text: str, fast: GuardVerdict) -> GuardVerdict:
        """The embedding classifier's opinion on a message the patterns found suspicious (blocking: run in a thread)."""
        assert self.classifier is not None
        score = self.classifier.score(read_for_detection(text).combined)
        combined = max(fast.score, score)
        if score >= self.classifier.threshold:
            reasons = (*fast.reasons, f"classifier {score:.2f}")
            return GuardVerdict(True, "injection", reasons, combined, _reply_for(fast.reasons))
        return GuardVerdict(False, reasons=fast.reasons, score=combined)

    def check(self, text: str) -> GuardVerdict:
        verdict, needs_model = self.check_fast(text)
        return self.check_model(text, verdict) if needs_model else verdict


def _reply_for(reasons: tuple[str, ...]) -> str:
    if "others_data" in reasons:
        return "guard_others_data"
    if "policy_pressure" in reasons:
        return "guard_policy"
    return "guard_injection"


__all__ = ["MODEL_FLOOR", "PASSED", "GuardVerdict", "InputGuard", "looks_like_gibberish", "normalise_for_matching"]
