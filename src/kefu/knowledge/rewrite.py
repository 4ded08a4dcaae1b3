"""Makes a follow-up ("那运费谁出？", "and for the blue one?") a standalone question before retrieval."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kefu.errors import LLMError
from kefu.language import Language
from kefu.llm.base import LLMBackend
from kefu.llm.types import GenerationOptions, Message, Usage
from kefu.prompts import PromptLibrary

_ZH_LEAD = re.compile(r"^(那|那么|那如果|还有|另外|如果|要是|假如|换成|改成|也|同样)")
_ZH_PRONOUN = re.compile(r"(它|这个|那个|这款|那款|这件|那件|这种|那种|这些|那些|上面|刚才|前面|同样|也是|呢[？?]?$)")
_EN_LEAD = re.compile(r"^(and|also|what about|how about|what if|same for|then|so|but|or)\b", re.IGNORECASE)
_EN_PRONOUN = re.compile(
    r"\b(it|its|that|this one|that one|these|those|them|they"
    r"|the (?:blue|red|black|white|other|same|second|first) one)\b",
    re.IGNORECASE,
)
_REWRITE_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 300}},
    "required": ["query"],
    "additionalProperties": False,
}
_HISTORY_TURNS = 4


def looks_like_follow_up(text: str) -> bool:
    """Short messages that lean on what was said before: a leading 那/and, a pronoun, or a bare 呢-question."""
    stripped = text.strip()
    cjk = len(re.findall(r"[\u4e00-\u9fff]", stripped))
    if cjk:
        return bool(_ZH_LEAD.search(stripped) or (cjk <= 14 and _ZH_PRONOUN.search(stripped)))
    words = re.findall(r"[A-Za-z']+", stripped)
    return bool(_EN_LEAD.search(stripped) or (len(words) <= 10 and _EN_PRONOUN.search(stripped)))


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The query retrieval and generation use, and how it was made."""

    query: str
    method: str
    """'none' (standalone), 'llm' or 'heuristic' (previous question + this one)."""
    usage: Usage | None = None


class QueryRewriter:
    """Asks the rewrite-role model for a standalone question; joins it to the previous question if that fails."""

    def __init__(self, prompts: PromptLibrary, mode: str = "llm") -> None:
        self.prompts = prompts
        self.mode = mode

    async def rewrite(
        self, text: str, history: Sequence[Message], language: Language, llm: LLMBackend | None
    ) -> Rewrite:
        earlier = [m for m in history if m.role in ("user", "assistant")][-_HISTORY_TURNS:]
        if self.mode == "off" or not earlier or not looks_like_follow_up(text):
            return Rewrite(text, "none")
        if self.mode == "llm" and llm is not None:
            system = self.prompts.render("rewrite", language=language)
            user = self.prompts.render("rewrite_input", history=earlier, question=text, language=language)
            options = GenerationOptions(max_tokens=80, temperature=0.0, json_schema=_REWRITE_SCHEMA)
            try:
                completion = await llm.complete([Message("system", system), Message("user", user)], options)
            except LLMError:
                completion = None
            if completion is not None:
                query = _parse_query(completion.text, text)
                if query:
                    return Rewrite(query, "llm", completion.usage)
        previous = next((m.content for m in reversed(earlier) if m.role == "user"), "")
        return Rewrite(f"{previous} {text}".strip(), "heuristic")


def _parse_query(raw: str, original: str) -> str | None:
    """The rewritten question from the model's JSON (or bare text); None when it is unusable."""
    text = raw.strip()
    try:
        data = json.loads(text)
        text = str(data.get("query", "")) if isinstance(data, dict) else ""
    except json.JSONDecodeError:
        text = text.strip("`\"' \n")
    text = " ".join(text.split())
    if not text or len(text) > max(300, 6 * len(original)):
        return None
    return text
