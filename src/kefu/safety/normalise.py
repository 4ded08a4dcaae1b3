"""How the input guard reads a customer message: spelling tricks undone, hidden payloads decoded.

`read_for_detection` folds the text (NFKC, invisible characters removed, letters that only look Latin — Cyrillic,
Greek — folded to Latin, traditional characters to simplified, emoji to spaces) and adds further readings where the
text hides words: spaced-out letters joined, leetspeak spelled out, base64/hex/ROT13 payloads decoded, pinyin read
as characters, the words of a mixed zh/en message read in the other language. Patterns, words and examples are
matched against all readings; the customer's original text is what is stored, answered and audited.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import opencc
from pydantic import BaseModel, ConfigDict, Field

from kefu.datafiles import load_yaml_model

VOCABULARY_FILE = Path(__file__).parent / "data" / "detection_vocabulary.yaml"

# Format characters (zero-width, soft hyphen, word joiner, tags…), variation selectors and blank-looking letters.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U0001d173-\U0001d17a\U000e0000-\U000e007f"
    "\U000e0100-\U000e01ef]"
)
_LETTER = "[^\\W\\d_]"
_INVISIBLE_IN_WORD = re.compile(f"(?<={_LETTER}){_INVISIBLE.pattern}+(?={_LETTER})")
_CJK = re.compile("[\u3400-\u9fff]")
_ASCII_WORD = re.compile(r"[A-Za-z]{2,}")
_SPACES = re.compile(r" {2,}")
_SPACE_BETWEEN_CJK = re.compile(r"(?<=[\u3400-\u9fff]) +(?=[\u3400-\u9fff])")
# Three or more single letters or characters, each followed by 1-3 separators: "i g n o r e", "r.e.v.e.a.l", "忽 略".
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?:[\W_]{1,3}[^\W_](?![^\W_])){2,}")
_SPLIT_WORD = re.compile(
    r"(?<![\w.])[^\W\d_]+(?:[.*_~^|+][^\W\d_]+)+(?![\w])|(?<![\w-])[^\W\d_]+(?:-[^\W\d_]+){2,}(?![\w])"
)
_LEET_WORD = re.compile(r"(?<![A-Za-z0-9@$])[A-Za-z0-9@$]*[A-Za-z][A-Za-z0-9@$]*(?![A-Za-z0-9@$])")
# A leet sign between letters, or leading two letters: "pr0mpt", "1gn0r3"; not "iPhone15" or "LM26080037".
_LEET_INSIDE = re.compile(r"[A-Za-z][013457@$]+[A-Za-z]|^[013457@$]+[A-Za-z]{2}")
_LEET_AS_I = str.maketrans("013457@$", "oieastas")
_LEET_AS_L = str.maketrans("013457@$", "oleastas")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){8,}(?![0-9A-Fa-f])")
# Common short English words: plain text has several, ROT13 text has almost none (until it is decoded).
_ENGLISH = frozenset(
    "the a an and or to of in on for is are was be it this that you your me my i we our with not no all any "
    "can do now please give tell show what how from as at by if then just only new must will".split()
)
_TONE_MARKS = re.compile("[\u0300-\u036f]")
# A run of text between quotes, colons, brackets or line breaks: ROT13 is judged part by part.
_ROT13_PART = re.compile(r"[^:：\n\"“”'‘’()（）\[\]]+")
_LETTER_LOG_FREQ = {
    c: math.log(f / 1000)
    for c, f in zip(
        "etaoinshrdlcumwfgypbvkjxqz",
        (127, 91, 82, 75, 70, 67, 63, 61, 60, 43, 40, 28, 28, 24, 24, 22, 20, 20, 19, 15, 10, 8, 2, 2, 1, 1),
        strict=True,
    )
}


class VocabularyWord(BaseModel):
    """One word detection also reads in another script."""

    model_config = ConfigDict(extra="forbid")

    zh: str = Field(min_length=1)
    en: str | None = None
    pinyin: str | None = None


class DetectionVocabulary(BaseModel):
    """Pinyin syllables and the zh/en/pinyin words of `detection_vocabulary.yaml`."""

    model_config = ConfigDict(extra="forbid")

    syllables: str
    words: list[VocabularyWord] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Reading:
    """A message as detection reads it: the folded text, further readings, and the tricks that were undone."""

    text: str
    variants: tuple[str, ...] = ()
    tricks: tuple[str, ...] = ()
    """Evasion seen in the message: `look_alikes` (Cyrillic/Greek letters inside Latin text), `invisible` (format
    characters inside words), `spaced`, `leet`, `base64`, `hex`, `rot13`, `pinyin`."""

    @property
    def combined(self) -> str:
        """Every reading, one per line (patterns do not match across lines)."""
        return "\n".join((self.text, *self.variants)) if self.variants else self.text


@dataclass(frozen=True, slots=True)
class _Tables:
    look_alikes: dict[int, str]
    accents: dict[int, str]
    syllables: frozenset[str]
    pinyin_words: dict[tuple[str, ...], str]
    longest_pinyin: int
    zh_to_en: dict[str, str]
    zh_pattern: re.Pattern[str] | None
    en_to_zh: dict[str, str]
    en_pattern: re.Pattern[str] | None


def warm() -> None:
    """Load the look-alike table, the vocabulary and the character converter (a tenth of a second, once)."""
    _tables()
    _converter()


MEMO_SIZE = 2048
"""Texts whose readings are kept: the guards read every message and reply, and the same texts keep coming (an FAQ's
answer, a flow's prompt, "转人工"); the model check reads a message the patterns already read."""


@functools.lru_cache(maxsize=MEMO_SIZE)
def fold(text: str) -> str:
    """The folded text alone: NFKC, invisible characters removed, look-alike letters Latin, simplified characters."""
    return _fold(text)[0]


@functools.lru_cache(maxsize=MEMO_SIZE)
def read_for_detection(text: str) -> Reading:
    """The folded text, plus a reading for each trick the text uses (none for an ordinary message)."""
    folded, tricks = _fold(text)
    variants: list[str] = []
    joined = _join_split_words(_join_spaced(folded))
    if joined != folded:
        variants.append(joined)
        tricks.append("spaced")
    for leet in _spell_leet(joined):
        variants.append(leet)
        if "leet" not in tricks:
            tricks.append("leet")
    for kind, decoded in _decoded_payloads(folded):
        variants.append(_fold(decoded)[0])
        tricks.append(kind)
    rot13 = _rot13_reading(folded)
    if rot13 is not None:
        variants.append(rot13)
        tricks.append("rot13")
    pinyin = _pinyin_reading(folded)
    if pinyin is not None:
        variants.append(pinyin)
        tricks.append("pinyin")
    variants.extend(_bridged(folded))
    return Reading(folded, tuple(dict.fromkeys(v for v in variants if v != folded)), tuple(dict.fromkeys(tricks)))


def _fold(text: str) -> tuple[str, list[str]]:
    tricks: list[str] = []
    text = unicodedata.normalize("NFKC", text)
    if _INVISIBLE_IN_WORD.search(text):
        tricks.append("invisible")
    text = _INVISIBLE.sub("", text)
    tables = _tables()
    folded = text.translate(tables.look_alikes)
    if folded != text and _ASCII_WORD.search(text):
        tricks.append("look_alikes")
    folded = folded.translate(tables.accents)
    # Emoji and pictographs separate words as well as a space does ("ignore🙂all🙂previous").
    folded = "".join(" " if unicodedata.category(c) == "So" else c for c in folded) if not folded.isascii() else folded
    if _CJK.search(folded):
        folded = _converter().convert(folded)
    return folded, tricks


def _join_spaced(text: str) -> str:
    def join(m: re.Match[str]) -> str:
        run = m.group(0)
        gaps = re.findall(r"[\W_]+", run)
        usual = Counter(gaps).most_common(1)[0][0]
        # The usual gap joins letters of a word; any other gap ("   " between spaced words) stays a space.
        return re.sub(r"[\W_]+", lambda g: "" if g.group(0) == usual else " ", run)

    return _SPACED.sub(join, text)


def _join_split_words(text: str) -> str:
    """Words cut into pieces by dots or other signs ("ig.no.re", "r*u*l*e*s") put back together."""
    return _SPLIT_WORD.sub(lambda m: re.sub(r"[.*_~^|+-]", "", m.group(0)), text)


def _spell_leet(text: str) -> list[str]:
    """Words with digits or signs between letters spelled out ("1gn0r3" → "ignore"; a "1" is also read as "l")."""
    words = [m for m in _LEET_WORD.finditer(text) if _LEET_INSIDE.search(m.group(0))]
    if not words:
        return []
    readings = []
    for spell in (_as_i, _as_l, _one_by_neighbour):
        out, last = [], 0
        for m in words:
            out += [text[last : m.start()], spell(m.group(0).lower())]
            last = m.end()
        readings.append("".join(out) + text[last:])
    return list(dict.fromkeys(readings))


def _as_i(word: str) -> str:
    return word.translate(_LEET_AS_I)


def _as_l(word: str) -> str:
    return word.translate(_LEET_AS_L)


def _one_by_neighbour(word: str) -> str:
    """A "1" after a vowel reads as "l" ("ru1es"), elsewhere as "i" ("g1ve")."""
    spelled = word.translate(_LEET_AS_I)
    return "".join("l" if c == "1" and i and spelled[i - 1] in "aeiou" else spelled[i] for i, c in enumerate(word))


def _decoded_payloads(text: str) -> list[tuple[str, str]]:
    """Base64 and hex tokens that decode to readable text (an order number or a phone number never does)."""
    found: list[tuple[str, str]] = []
    for m in _BASE64.finditer(text):
        token = m.group(0)
        if token.isalpha() or token.isdigit() or (token.isalnum() and (token.islower() or token.isupper())):
            continue  # a plain word or number, not a payload
        try:
            raw = base64.b64decode(token.replace("-", "+").replace("_", "/") + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            continue
        decoded = _readable(raw)
        if decoded:
            found.append(("base64", decoded))
    for m in _HEX.finditer(text):
        decoded = _readable(bytes.fromhex(m.group(0)))
        if decoded:
            found.append(("hex", decoded))
    return found


def _readable(raw: bytes) -> str | None:
    """Decoded bytes that are mostly letters and all printable: a hidden message, not binary noise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(c.isalpha() for c in text)
    printable = sum(c.isprintable() for c in text)
    return text if letters >= 4 and letters >= 0.5 * len(text) and printable == len(text) else None


def _rot13_reading(text: str) -> str | None:
    """The text with its ROT13 parts decoded: a part reads as English only once rotated (common words, letter
    frequencies), so ordinary English and pinyin stay as they are."""
    changed = False

    def decode(m: re.Match[str]) -> str:
        nonlocal changed
        part = m.group(0)
        words = [w.lower() for w in _ASCII_WORD.findall(part)]
        if len(words) < 2:
            return part
        rotated = codecs.encode(part, "rot13")
        common = sum(w in _ENGLISH for w in words)
        common_rotated = sum(w.lower() in _ENGLISH for w in _ASCII_WORD.findall(rotated))
        letters = sum(len(w) for w in words)
        gain = _english_likeness(rotated) - _english_likeness(part)
        if (common_rotated >= 2 and common_rotated >= common) or (letters >= 12 and gain > 0.4 * letters):
            changed = True
            return rotated
        return part

    decoded = _ROT13_PART.sub(decode, text)
    return decoded if changed else None


def _english_likeness(text: str) -> float:
    """Log-likelihood of the letters under English letter frequencies."""
    return sum(_LETTER_LOG_FREQ.get(c, 0.0) for c in text.lower())


def _pinyin_reading(text: str) -> str | None:
    """Text mostly in toneless or toned pinyin, read with the vocabulary's words in characters."""
    tables = _tables()
    plain = _TONE_MARKS.sub("", unicodedata.normalize("NFKD", text)).replace("ü", "u").replace("Ü", "U")
    words = re.findall(r"[A-Za-z]+", plain)
    if len(words) < 3:
        return None
    segmented = [_segment(w.lower(), tables.syllables) for w in words]
    if sum(s is not None for s in segmented) < 0.7 * len(words):
        return None
    out: list[str] = []
    syllables: list[str] = []
    for piece in re.split(r"([A-Za-z]+)", plain):
        if piece and piece[0].isascii() and piece[0].isalpha():
            parts = _segment(piece.lower(), tables.syllables)
            if parts is None:
                out.append(_read_syllables(syllables, tables) + piece)
                syllables = []
            else:
                syllables.extend(parts)
        elif piece.strip():
            out.append(_read_syllables(syllables, tables) + piece.strip())
            syllables = []
    out.append(_read_syllables(syllables, tables))
    return "".join(out)


def _segment(word: str, syllables: frozenset[str]) -> list[str] | None:
    """The fewest pinyin syllables that spell `word`, or None when it is not pinyin."""
    best: list[list[str] | None] = [[]] + [None] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(max(0, end - 6), end):
            head = best[start]
            if head is not None and word[start:end] in syllables:
                candidate = [*head, word[start:end]]
                current = best[end]
                if current is None or len(candidate) < len(current):
                    best[end] = candidate
    return best[len(word)]


def _read_syllables(syllables: list[str], tables: _Tables) -> str:
    out, i = [], 0
    while i < len(syllables):
        for size in range(min(tables.longest_pinyin, len(syllables) - i), 0, -1):
            word = tables.pinyin_words.get(tuple(syllables[i : i + size]))
            if word is not None:
                out.append(word)
                i += size
                break
        else:
            out.append("_")
            i += 1
    return "".join(out)


def _bridged(text: str) -> list[str]:
    """A mixed zh/en message read with its listed words in English, and again in Chinese."""
    if not _CJK.search(text) or not _ASCII_WORD.search(text):
        return []
    tables = _tables()
    readings = []
    if tables.zh_pattern is not None and tables.zh_pattern.search(text):
        english = tables.zh_pattern.sub(lambda m: f" {tables.zh_to_en[m.group(0)]} ", text)
        readings.append(_SPACES.sub(" ", english))
    if tables.en_pattern is not None and tables.en_pattern.search(text):
        chinese = tables.en_pattern.sub(lambda m: tables.en_to_zh[m.group(1).lower()], text)
        readings.append(_SPACE_BETWEEN_CJK.sub("", chinese))
    return readings


@functools.cache
def _tables() -> _Tables:
    """Built once per process from the bundled data (the look-alike table comes with confusable-homoglyphs)."""
    from confusable_homoglyphs.confusables import confusables_data

    look_alikes: dict[int, str] = {}
    for char, homoglyphs in confusables_data.items():
        if len(char) != 1 or char.isascii() or not unicodedata.category(char).startswith("L"):
            continue
        if unicodedata.name(char, "").split(" ")[0] not in _LOOK_ALIKE_SCRIPTS:
            continue
        latin = [h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalpha()]
        if latin:
            same_case = [c for c in latin if c.isupper() == char.isupper()]
            # A capital that looks like "l" (Greek Ι, Cyrillic І) stands for "I" at least as often.
            look_alikes[ord(char)] = (same_case or (["I"] if char.isupper() and latin == ["l"] else latin))[0]
    # Latin letters the look-alike table misses: small capitals ("ɪɢɴᴏʀᴇ") become look-alikes, accents are dropped.
    accents: dict[int, str] = {}
    for start, end in _LATIN_RANGES:
        for code in range(start, end):
            m = _LATIN_NAME.match(unicodedata.name(chr(code), ""))
            if m is None or code in look_alikes:
                continue
            letter = m.group("letter").lower() if m.group("case") != "CAPITAL " else m.group("letter")
            (look_alikes if m.group("small_capital") else accents)[code] = letter
    vocabulary = load_yaml_model(VOCABULARY_FILE, DetectionVocabulary)
    syllables = frozenset(vocabulary.syllables.split())
    pinyin_words = {tuple(w.pinyin.split()): w.zh for w in vocabulary.words if w.pinyin}
    zh_to_en = {w.zh: w.en for w in vocabulary.words if w.en}
    en_to_zh = {w.en.lower(): w.zh for w in vocabulary.words if w.en}
    return _Tables(
        look_alikes=look_alikes,
        accents=accents,
        syllables=syllables,
        pinyin_words=pinyin_words,
        longest_pinyin=max(len(k) for k in pinyin_words),
        zh_to_en=zh_to_en,
        zh_pattern=_alternation(zh_to_en, r"{}"),
        en_to_zh=en_to_zh,
        en_pattern=_alternation(en_to_zh, r"\b({})s?\b", re.IGNORECASE),
    )


def _alternation(words: dict[str, str], template: str, flags: int = 0) -> re.Pattern[str] | None:
    if not words:
        return None
    ordered = sorted(words, key=len, reverse=True)
    return re.compile(template.format("|".join(re.escape(w) for w in ordered)), flags)


@functools.cache
def _converter() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


_LATIN_RANGES = ((0x00C0, 0x0250), (0x0250, 0x02B0), (0x1D00, 0x1DC0), (0x1E00, 0x1F00), (0xA720, 0xA800))
_LATIN_NAME = re.compile(
    r"LATIN (?P<case>SMALL |CAPITAL )?LETTER (?P<small_capital>SMALL CAPITAL )?(?P<letter>[A-Z])( WITH .*)?$"
)
_LOOK_ALIKE_SCRIPTS = frozenset({"CYRILLIC", "GREEK", "LATIN", "ARMENIAN", "CHEROKEE", "COPTIC", "LISU", "MODIFIER"})

__all__ = ["DetectionVocabulary", "Reading", "fold", "read_for_detection", "warm"]
