"""Entities and slot values: what concrete things a customer mentioned, normalised, resolved in context."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kefu.datafiles import load_yaml_model
from kefu.llm.types import Message
from kefu.understanding.entities.address import AddressExtractor
from kefu.understanding.entities.dates import DateExtractor
from kefu.understanding.entities.gazetteer import CatalogueGazetteer, Product, load_products
from kefu.understanding.entities.identifiers import IdentifierExtractor
from kefu.understanding.entities.numbers import NumberExtractor
from kefu.understanding.entities.references import History, ReferenceResolver
from kefu.understanding.entities.text import EN_NUMBER_WORDS, normalise, parse_number
from kefu.understanding.types import Entity

__all__ = ["EntityExtractor", "Product", "ShopFormats", "load_shop_formats"]

_COUNT_BEFORE = re.compile(rf"(?<![\w.,¥$-])(\d{{1,3}}|(?i:{EN_NUMBER_WORDS}))\s+(?:x\s+|of\s+the\s+)?$")
# The word before the count must be an ordinary lower-case word ("bought 2 …") or Chinese, not part of a
# name ("Wi-Fi 6 路由器", "Vela X7 12GB").
_BEFORE_COUNT = re.compile(r"(?:^|(?:^|\s)[a-z]+\s+|[\u4e00-\u9fff]\s*)$")
_HISTORY_MESSAGES = 6
"""How far back references ("the second one") are looked up."""


class _Locale(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    currency: str = "CNY"
    timezone: str = "Asia/Shanghai"


class ShopFormats(BaseModel):
    """The parts of shop.yaml that say how the shop's numbers look (other keys belong to other parts)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    order_number_pattern: str | None = None
    after_sale_id_pattern: str | None = None
    tracking_number_patterns: dict[str, str] = {}
    locale: _Locale = _Locale()


def load_shop_formats(shop_dir: Path | None) -> ShopFormats:
    if shop_dir is None or not (shop_dir / "shop.yaml").is_file():
        return ShopFormats()
    return load_yaml_model(shop_dir / "shop.yaml", ShopFormats)


class EntityExtractor:
    """Runs every extractor over a message, keeps non-overlapping spans, then resolves references."""

    def __init__(self, formats: ShopFormats, products: Sequence[Product] = ()) -> None:
        self.identifiers = IdentifierExtractor(
            order_number=formats.order_number_pattern,
            tracking_numbers=formats.tracking_number_patterns,
            after_sale_id=formats.after_sale_id_pattern,
        )
        self.dates = DateExtractor()
        self.numbers = NumberExtractor(default_currency=formats.locale.currency)
        self.gazetteer = CatalogueGazetteer(products) if products else None
        self.addresses = AddressExtractor()
        self.references = ReferenceResolver(self.gazetteer)
        # A message's entities depend on its text and the day alone, and a turn reads the conversation's last
        # messages again (references: "the second one"): kept for the last texts read.
        self._spans_on = functools.lru_cache(maxsize=4096)(self._spans_uncached)

    @classmethod
    def for_shop(cls, shop_dir: Path | None) -> EntityExtractor:
        """Formats from shop.yaml and the gazetteer from catalog/products.csv, where the shop has them."""
        formats = load_shop_formats(shop_dir)
        catalogue = shop_dir / "catalog" / "products.csv" if shop_dir is not None else None
        products = load_products(catalogue) if catalogue is not None and catalogue.is_file() else []
        return cls(formats, products)

    def extract(self, text: str, now: datetime, history: Sequence[Message] = ()) -> list[Entity]:
        """Entities of `text` in order of appearance, plus those its references resolve to."""
        clean = normalise(text)
        found = self._spans(clean, now, fuzzy=True)
        if history:
            earlier: History = [
                (m.role, self._spans(normalise(m.content), now, fuzzy=False))
                for m in history[-_HISTORY_MESSAGES:]
                if m.role in ("user", "assistant")
            ]
            found.extend(self.references.resolve(clean, found, earlier))
        return [self._surface(text, e) for e in found]

    def _spans(self, text: str, now: datetime, *, fuzzy: bool) -> list[Entity]:
        return list(self._spans_on(text, now.date(), fuzzy))

    def _spans_uncached(self, text: str, today: date, fuzzy: bool) -> tuple[Entity, ...]:
        # Earlier groups win overlaps: an order number is not a phone, a date is not a quantity, an address
        # number is not an amount.
        groups: list[list[Entity]] = [
            self.identifiers.extract(text),
            self.addresses.extract(text),
            self.dates.extract_on(text, today),
            self.gazetteer.extract(text, fuzzy=fuzzy) if self.gazetteer else [],
            self.numbers.extract(text),
        ]
        kept: list[Entity] = []
        for group in groups:
            for entity in group:
                if all(entity.end <= k.start or entity.start >= k.end for k in kept):
                    kept.append(entity)
        kept.extend(self._counts_before_products(text, kept))
        kept.sort(key=lambda e: e.start)
        return tuple(kept)

    @staticmethod
    def _counts_before_products(text: str, kept: list[Entity]) -> list[Entity]:
        """ "2 Orca M3 mice", "three Kumo kettles": a bare number right before a product is how many."""
        found = []
        for product in (e for e in kept if e.type == "product" and e.source == "text"):
            m = _COUNT_BEFORE.search(text, 0, product.start)
            if (
                m is None
                or not _BEFORE_COUNT.search(text, 0, m.start(1))
                or any(m.start(1) < k.end and m.end(1) > k.start for k in kept)
            ):
                continue
            count = parse_number(m.group(1))
            if count is not None and count == int(count) and 0 < count < 1000:
                found.append(Entity("quantity", str(int(count)), m.group(1), m.start(1), m.end(1)))
        return found

    @staticmethod
    def _surface(original: str, entity: Entity) -> Entity:
        """Report what the customer typed (full-width and all), not the normalised text."""
        if entity.source != "text" or entity.start < 0:
            return entity
        surface = original[entity.start : entity.end]
        if surface == entity.text:
            return entity
        return Entity(
            entity.type, entity.value, surface, entity.start, entity.end, entity.source, entity.confidence, entity.attrs
        )
