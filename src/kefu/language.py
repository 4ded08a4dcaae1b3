"""Which language a customer writes in (zh / en / mixed); replies follow the dominant one."""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["zh", "en"]
LanguageMix = Literal["zh", "en", "mixed"]
"""What a message is written in; `mixed` is Chinese with English words (or the other way round)."""

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Words, not codes: "X7", "LM26110625" or "5G" say nothing about the customer's language.
_WORD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2,}(?:'[a-z]+)?(?![A-Za-z0-9])")


def language_mix(text: str) -> LanguageMix | None:
    """'zh', 'en' or 'mixed' by the scripts in the text; None when it has neither (a number, an emoji)."""
    has_zh = _CJK.search(text) is not None
    has_en = _WORD.search(text) is not None
    if has_zh and has_en:
        return "mixed"
    if has_zh:
        return "zh"
    if has_en:
        return "en"
    return None


def detect_language(text: str, default: Language = "en") -> Language:
    """The language to reply in: the dominant one of the text, or `default` when it has no words.

    Chinese speakers often drop English product words into Chinese sentences ("我的order到哪了"), while the
    reverse is rarer, so a mixed message counts as Chinese unless its English words outnumber its Chinese
    characters ("Can I return the 耳机?").
    """
    cjk = len(_CJK.findall(text))
    words = len(_WORD.findall(text))
    if cjk == 0 and words == 0:
        return default
    return "zh" if cjk >= words else "en"


def estimate_tokens(text: str) -> int:
    """A cheap upper-bound token estimate for prompt budgeting (one per CJK character, ~1.3 per word)."""
    cjk = len(_CJK.findall(text))
    words = len(re.findall(r"[A-Za-z0-9]+", text))
    other = len(re.findall(r"[^\sA-Za-z0-9\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]", text))
    return cjk + (words * 4 + 2) // 3 + other // 2 + 1
