"""What makes two questions "the same" for the answer cache, and what an answer depends on (its namespace)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

FORMAT_VERSION = 1
"""Part of every namespace: a change in what an entry holds makes older entries unreachable."""

_SPACES = re.compile(r"\s+")
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}]) | (?=[{_CJK}])")
_SHOUTING = re.compile(r"\b[A-Z]{4,}\b")
_TRAILING_STOP = re.compile(r"(?<![?.!。])[?.。]$")


def normalise(text: str) -> str:
    """The form two messages share when they ask the same thing in the same way.

    Width and compatibility forms (NFKC: "？" is "?"), runs of whitespace, spaces next to Chinese characters and
    one final question mark or full stop make no difference; case makes none either, unless the customer is
    shouting (the emotion detector reads capitals, "!!" and "???", so those are kept).
    """
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    text = _CJK_GAP.sub("", text)
    if not _SHOUTING.search(text):
        text = text.casefold()
    return _TRAILING_STOP.sub("", text).rstrip()


def digest(*parts: str) -> str:
    """A short, stable hash of its parts (keys and namespaces are built from these)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Namespace:
    """Everything a cached answer depends on besides the question: knowledge, prompts, models and settings.

    Two workers or replicas of one deployment compute the same namespace; when any part changes (a document is
    edited, a template or the chat model changes), the namespace changes and no older entry can be found again.
    """

    id: str
    knowledge_version: int
    """Entries of older knowledge versions are dropped when a newer one is seen."""

    @classmethod
    def of(cls, knowledge_version: int, parts: Iterable[str]) -> Namespace:
        return cls(digest(f"v{FORMAT_VERSION}", str(knowledge_version), *parts), knowledge_version)

    def exact_key(self, tenant_id: str, language: str, question: str) -> str:
        """The entry id of a question (normalised text) asked in one language of one tenant."""
        return digest(self.id, tenant_id, language, normalise(question))

    def scope(self, tenant_id: str, language: str, intent: str) -> str:
        """The group of entries a paraphrase may be served from: same tenant, language and intent."""
        return digest(self.id, tenant_id, language, intent)
