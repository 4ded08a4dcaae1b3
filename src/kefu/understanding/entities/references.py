"""Resolving references to earlier messages: "the second one", "第二个", "那个蓝色的", "that order"."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from kefu.understanding.entities.gazetteer import CatalogueGazetteer
from kefu.understanding.types import Entity

_ORDINAL_ZH = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6}
_ORDINAL_EN = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4}
_ORDINAL_EN |= {"fifth": 5, "5th": 5, "former": 1}
_ORDINAL = re.compile(
    r"第\s*([一二两三四五六1-6])\s*(?:个|款|件|单|项|条|种|台|只|笔)"
    r"|(最后一|后一|前一)(?:个|款|件|单|项|条|种|台|只|笔)"
    r"|(?i:\bthe\s+(first|second|third|fourth|fifth|1st|2nd|3rd|4th|5th|last|former|latter)"
    r"(?:\s+(?:one|option|item|order|product|model))?\b)"
)
_COLOUR_REFERENCE = re.compile(r"(那|这)(个|款|件|只|台)|(?i:\b(the|that|this)\s+\w+\s+(one|model|version)\b)|要")
_ORDER_REFERENCE = re.compile(
    r"(这|那|该|上一|上个|刚才那)个?(订单|单子|单)|(?i:\b(this|that|the same|the previous|the)\s+order\b)"
)

LIST_TYPES = ("product", "order_number")
"""Entity types a customer picks from a list by position."""

History = Sequence[tuple[str, list[Entity]]]
"""Earlier messages, oldest first, as (role, entities extracted from the message)."""


def _ordinal(m: re.Match[str]) -> int | None:
    """1-based position, or -1 for the last one."""
    if m.group(1):
        token = m.group(1)
        return int(token) if token.isdigit() else _ORDINAL_ZH[token]
    if m.group(2):
        return -1 if m.group(2) in ("最后一", "后一") else 1
    word = (m.group(3) or "").lower()
    if word in ("last", "latter"):
        return -1
    return _ORDINAL_EN.get(word)


class ReferenceResolver:
    """Turns references in the current message into entities taken from the conversation (source='context')."""

    def __init__(self, gazetteer: CatalogueGazetteer | None) -> None:
        self._gazetteer = gazetteer

    def resolve(self, text: str, current: list[Entity], history: History) -> list[Entity]:
        if not history:
            return []
        resolved: list[Entity] = []
        kinds = {e.type for e in current}
        for m in _ORDINAL.finditer(text):
            position = _ordinal(m)
            entity = self._pick_from_list(history, position) if position is not None else None
            if entity is not None and entity.type not in kinds:
                resolved.append(self._context(entity, m.group(0), m.start(), m.end()))
                kinds.add(entity.type)
        colours = [e for e in current if e.type == "color"]
        if colours and "product" not in kinds and _COLOUR_REFERENCE.search(text):
            family = colours[0].attrs.get("family") or colours[0].value
            product = self._recent(history, lambda e: e.type == "product" and self._offers(e.value, str(family)))
            if product is not None:
                resolved.append(self._context(product, colours[0].text, colours[0].start, colours[0].end))
                kinds.add("product")
        reference = _ORDER_REFERENCE.search(text) if "order_number" not in kinds else None
        if reference is not None:
            order = self._recent(history, lambda e: e.type == "order_number")
            if order is not None:
                resolved.append(self._context(order, reference.group(0), reference.start(), reference.end()))
        return resolved

    @staticmethod
    def _context(entity: Entity, surface: str, start: int, end: int) -> Entity:
        attrs = {**entity.attrs, "refers_to": entity.text}
        return Entity(entity.type, entity.value, surface, start, end, "context", entity.confidence, attrs)

    @staticmethod
    def _pick_from_list(history: History, position: int) -> Entity | None:
        """The position-th item of the latest message that listed several products or orders."""
        for _role, entities in reversed(history):
            for kind in LIST_TYPES:
                items: list[Entity] = []
                for e in entities:
                    if e.type == kind and all(i.value != e.value for i in items):
                        items.append(e)
                if len(items) >= 2:
                    if position == -1:
                        return items[-1]
                    return items[position - 1] if 0 < position <= len(items) else None
        return None

    @staticmethod
    def _recent(history: History, wanted: Callable[[Entity], bool]) -> Entity | None:
        for _role, entities in reversed(history):
            for e in entities:
                if wanted(e):
                    return e
        return None

    def _offers(self, sku: str, family: str) -> bool:
        if self._gazetteer is None:
            return False
        return sku in self._gazetteer.products_with_colour(family)
