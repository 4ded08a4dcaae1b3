"""Length-preserving text normalisation and small numeral helpers shared by the entity extractors."""

from __future__ import annotations

import re

import cn2an

# Full-width ASCII (Ａ, １, ：) and the ideographic space map one-to-one onto ASCII, so character offsets
# found in the normalised text are offsets in what the customer typed.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}

CN_DIGITS = "零〇一二两三四五六七八九"
CN_NUMERAL = f"[{CN_DIGITS}十百千万亿点]"
_CN_SMALL = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_EN_SMALL = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "a couple of": 2,
    "a few": 3,
}
EN_NUMBER_WORDS = "|".join(sorted((re.escape(w) for w in _EN_SMALL), key=len, reverse=True))


def normalise(text: str) -> str:
    """Full-width letters, digits and punctuation as ASCII; the same length as the input."""
    return text.translate(_FULL_WIDTH)


def parse_number(token: str) -> float | None:
    """An Arabic, Chinese ("三千五", "两百") or small English ("two") number, or None."""
    token = token.strip().replace(",", "")
    if not token:
        return None
    lowered = token.lower()
    if lowered in _EN_SMALL:
        return float(_EN_SMALL[lowered])
    try:
        return float(token)
    except ValueError:
        pass
    if len(token) == 1 and token in _CN_SMALL:
        return float(_CN_SMALL[token])
    try:
        return float(cn2an.cn2an(token, "smart"))
    except (ValueError, KeyError, IndexError, TypeError):
        return None
