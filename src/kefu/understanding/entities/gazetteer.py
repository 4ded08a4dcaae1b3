"""Products, colours and sizes named after the shop's catalogue, matched exactly (Aho-Corasick) or fuzzily.

Aliases are derived from the catalogue, not typed in: the full names, the names without the brand, the
model ("Vela X7 Pro", "K87"), the Chinese product noun ("空气炸锅") and the SKU. An alias shared by many
products ("耳机") names no product; one shared by a few ("Vela X7") names the first and lists the others.
"""

from __future__ import annotations

import csv
import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ahocorasick
from rapidfuzz import fuzz, process

from kefu.errors import DataFileError
from kefu.understanding.types import Entity

_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_EN_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.\-]*")
_MAX_CANDIDATES = 3
"""An alias naming more products than this is a category word, not a product."""
_GENERIC_EN = {
    "smartphone", "case", "charger", "cable", "earbuds", "headphones", "speaker", "keyboard", "mouse", "hub",
    "stand", "folio", "stylus", "ssd", "station", "light", "bar", "mat", "webcam", "vacuum", "lock", "plug",
    "bulb", "camera", "purifier", "filter", "sensor", "gateway", "router", "smartwatch", "band", "ring", "strap",
    "dock", "fryer", "cup", "kettle", "blender", "machine", "cooker", "set", "pot", "backpack", "suitcase",
    "pouch", "sleeve", "jacket", "t-shirt", "cap", "sling", "shorts", "tote", "card", "the", "for", "with", "and",
    "pro", "air", "lite", "mini", "max", "plus", "edition", "custom", "portable", "wireless", "smart", "lumo",
}  # fmt: skip
_FAMILY_WORDS = {
    "black": "black", "white": "white", "blue": "blue", "navy": "blue", "grey": "grey", "gray": "grey",
    "charcoal": "grey", "purple": "purple", "green": "green", "turquoise": "green", "pink": "pink",
    "orange": "orange", "red": "red", "beige": "beige", "khaki": "khaki", "silver": "silver", "gold": "gold",
    "clear": "clear", "cream": "white", "natural": "natural", "titanium": "titanium", "yellow": "yellow",
    "brown": "brown", "wood": "wood",
}  # fmt: skip
_FAMILY_ZH = {
    "黑": "black", "白": "white", "蓝": "blue", "灰": "grey", "紫": "purple", "绿": "green", "粉": "pink",
    "橙": "orange", "红": "red", "金": "gold", "银": "silver", "黄": "yellow", "棕": "brown", "咖": "brown",
    "米": "beige", "卡其": "khaki", "透明": "clear", "原木": "wood",
}  # fmt: skip
_MODIFIERS = {"pro", "air", "lite", "max", "plus", "mini"}
_GENERIC_COLOUR_ZH = re.compile(r"(黑|白|蓝|灰|紫|绿|粉|橙|红|金|银|黄|棕|咖啡|卡其|米)(?:色|颜色|的)|(透明)(?:款|的)?")
_GENERIC_COLOUR_EN = re.compile(
    r"(?i)\b(black|white|blue|navy|grey|gray|purple|green|pink|orange|red|beige|khaki|silver|gold|yellow|brown)\b"
)
_LETTER_SIZE = re.compile(
    r"(?i)(?:\bsize\s*:?\s*(XXL|XL|XS|L|M|S)\b|(?<![A-Za-z0-9])(XXL|XL|XS|L|M|S)\s?(?:码|號|号|size\b|号的|码的))"
    r"|(?<![A-Za-z0-9.])(XXL|XL|XS)(?![A-Za-z0-9])"
)
_NUMERIC_SIZE = re.compile(r"(?i)\bsize\s*:?\s*(\d{1,2})\b|(?<!\d)(\d{1,2})\s?(?:码|号戒指|号的戒指)")


@dataclass(frozen=True, slots=True)
class Product:
    """A catalogue product as the gazetteer knows it."""

    sku: str
    name_zh: str
    name_en: str
    colours: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()


def colour_family(canonical: str) -> str | None:
    """'远峰蓝/Sierra Blue' → 'blue'; None when the name says no basic colour."""
    zh, _, en = canonical.partition("/")
    for word in reversed(en.lower().split()):
        if word in _FAMILY_WORDS:
            return _FAMILY_WORDS[word]
    for key, family in _FAMILY_ZH.items():
        if key in zh:
            return family
    return None


def load_products(path: Path) -> list[Product]:
    """Read catalog/products.csv (sku, name_zh, name_en, colors, sizes; values separated by '|')."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataFileError(str(path), None, "file not found") from None
    products = []
    for line, row in enumerate(rows, start=2):
        missing = [k for k in ("sku", "name_zh", "name_en") if not (row.get(k) or "").strip()]
        if missing:
            raise DataFileError(str(path), line, f"missing {', '.join(missing)}")
        products.append(
            Product(
                sku=row["sku"].strip(),
                name_zh=row["name_zh"].strip(),
                name_en=row["name_en"].strip(),
                colours=tuple(c for c in (row.get("colors") or "").split("|") if c),
                sizes=tuple(s for s in (row.get("sizes") or "").split("|") if s),
            )
        )
    return products


def _compact(text: str) -> tuple[str, list[int]]:
    """Lower-case text without spaces, and for each kept character its index in the input."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        chars.append(ch.lower())
        index.append(i)
    return "".join(chars), index


def _has_digit(token: str) -> bool:
    return any(c.isdigit() for c in token) and "gb" not in token.lower()


def _is_model_token(token: str) -> bool:
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token) and "gb" not in token.lower()


def _product_aliases(product: Product) -> set[str]:
    aliases = {product.name_zh, product.name_en, product.sku}
    en_tokens = _EN_TOKEN.findall(product.name_en)
    brandless = en_tokens[1:] if len(en_tokens) > 1 else en_tokens
    aliases.add(" ".join(brandless))
    # Model prefixes: "X7", "X7 Pro", "Buds Pro 2", "Tempo Band 8", "Vela Flip": any prefix with a model
    # number, and two-word prefixes that stop before the first generic noun.
    for tokens in (en_tokens, brandless):
        prefix: list[str] = []
        generic_seen = False
        for token in tokens[:5]:
            generic = token.lower() in _GENERIC_EN and token.lower() not in _MODIFIERS
            prefix.append(token)
            numbered = any(_has_digit(t) for t in prefix)
            if (numbered and (len(prefix) >= 2 or _is_model_token(token))) or (
                len(prefix) >= 2 and not generic and not generic_seen
            ):
                aliases.add(" ".join(prefix))
            generic_seen = generic_seen or generic
    # English product nouns: "Air Fryer", "Kumo Air Fryer", "Robot Vacuum" (before "with"/"for"/"and").
    without_brand = product.name_en.split(" ", 1)[-1]
    head = _EN_TOKEN.findall(re.split(r"(?i)\b(?:with|for|and)\b|[(（]", without_brand)[0])
    words = [t for t in head if not any(c.isdigit() for c in t) and len(t) > 1]
    for size in (2, 3):
        if len(words) >= size:
            aliases.add(" ".join(words[-size:]))
            aliases.add(" ".join([en_tokens[0], *words[-size:]]))
        if len(words) >= size:
            aliases.add(" ".join(words[:size]))
    zh_tokens = product.name_zh.split()
    if len(zh_tokens) > 1:
        aliases.add(" ".join(zh_tokens[1:]))
    for run in _CJK_RUN.findall(product.name_zh):
        # The product noun and its shorter tails: "可视空气炸锅" → "空气炸锅", "炸锅"...
        for cut in range(len(run) - 1):
            tail = run[cut:]
            if len(tail) >= 2:
                aliases.add(tail)
    # A price or a size alone ("¥100", "20") is not a product name.
    return {a for a in aliases if len(a.replace(" ", "")) >= 2 and any(c.isalpha() for c in a)}


class CatalogueGazetteer:
    """Finds products, colours and sizes of one catalogue in a message."""

    def __init__(self, products: Sequence[Product]) -> None:
        self.products = {p.sku: p for p in products}
        self._order = {p.sku: i for i, p in enumerate(products)}
        aliases: dict[str, list[str]] = defaultdict(list)
        for product in products:
            for alias in _product_aliases(product):
                key, _ = _compact(alias)
                if product.sku not in aliases[key]:
                    aliases[key].append(product.sku)
        self._colour_names: dict[str, str] = {}
        self._size_names: dict[str, str] = {}
        for product in products:
            for colour in product.colours:
                for part in colour.split("/"):
                    self._colour_names[_compact(part)[0]] = colour
            for size in product.sizes:
                for part in self._size_aliases(size):
                    self._size_names[_compact(part)[0]] = size
        self._automaton = ahocorasick.Automaton()
        for key, skus in aliases.items():
            self._automaton.add_word(key, ("product", key, tuple(skus)))
        for key, colour in self._colour_names.items():
            if len(key) >= 2 and key not in aliases:
                self._automaton.add_word(key, ("colour", key, (colour,)))
        for key, size in self._size_names.items():
            if len(key) >= 2 and key not in aliases and not key.isdigit():
                self._automaton.add_word(key, ("size", key, (size,)))
        self._automaton.make_automaton()
        # Fuzzy matching only for English aliases of several letters: typos in "Sonaro Bds Pro".
        self._fuzzy_aliases = {
            alias: tuple(skus)
            for alias, skus in aliases.items()
            if alias.isascii() and len(alias) >= 6 and len(skus) <= _MAX_CANDIDATES and not alias.startswith("lm-")
        }
        self._fuzzy_keys = list(self._fuzzy_aliases)
        # Distinctive catalogue words ("sonaro", "trailfox", "purifier"): a message is compared with whole
        # aliases only around a word close to one of these, which keeps fuzzy matching well under a millisecond.
        self._fuzzy_words = sorted(
            {
                t.lower()
                for p in products
                for t in _EN_TOKEN.findall(p.name_en)
                if len(t) >= 4 and t.isalpha() and t.lower() not in _GENERIC_EN
            }
        )
        # Customers' words repeat ("where", "order", "refund"): each word's and each window's fuzzy lookup is kept.
        self._near_word = functools.lru_cache(maxsize=8192)(self._near_word_uncached)
        self._closest_alias = functools.lru_cache(maxsize=8192)(self._closest_alias_uncached)

    @staticmethod
    def _size_aliases(size: str) -> Iterable[str]:
        parts = size.split("/")
        yield from parts
        for part in parts:
            m = re.match(r"^(\d+)(英寸|-inch)$", part)
            if m:
                yield from (f"{m.group(1)}寸", f"{m.group(1)}英寸", f"{m.group(1)}-inch", f"{m.group(1)} inch")
            if "×" in part or "x" in part:
                yield part.replace("×", "x").replace(" cm", "").replace("cm", "")
        if size == "均码/One Size":
            yield from ("free size", "均码")

    def extract(self, text: str, *, fuzzy: bool = True) -> list[Entity]:
        compact, index = _compact(text)
        hits: list[tuple[int, int, str, str, tuple[str, ...]]] = []
        for end, (kind, key, values) in self._automaton.iter(compact):
            start = end - len(key) + 1
            o_start, o_end = index[start], index[end] + 1
            if not self._at_word_boundary(text, o_start, o_end):
                continue
            hits.append((o_start, o_end, kind, key, values))
        # Longest match first, then leftmost; overlapping shorter matches are dropped.
        hits.sort(key=lambda h: (-(h[1] - h[0]), h[0]))
        taken: list[tuple[int, int]] = []
        found: list[Entity] = []
        for start, end, kind, _key, values in hits:
            if any(start < e and end > s for s, e in taken):
                continue
            entity = self._entity(kind, text[start:end], start, end, values)
            if entity is None:
                continue
            taken.append((start, end))
            found.append(entity)
        found = self._merge_repeats(text, found)
        found.extend(self._generic_colours(text, taken))
        found.extend(self._sizes(text, taken))
        if fuzzy and not any(e.type == "product" for e in found):
            found.extend(self._fuzzy_products(text, taken))
        found.sort(key=lambda e: e.start)
        return found

    @staticmethod
    def _merge_repeats(text: str, found: list[Entity]) -> list[Entity]:
        """One product named twice in a row ("Vela Flip 折叠屏手机") is one mention."""
        found.sort(key=lambda e: e.start)
        merged: list[Entity] = []
        for entity in found:
            last = merged[-1] if merged else None
            if (
                last is not None
                and last.type == entity.type == "product"
                and last.value == entity.value
                and not text[last.end : entity.start].strip()
            ):
                merged[-1] = Entity(
                    "product", last.value, text[last.start : entity.end], last.start, entity.end, attrs=last.attrs
                )
                continue
            merged.append(entity)
        return merged

    @staticmethod
    def _at_word_boundary(text: str, start: int, end: int) -> bool:
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        first, last = text[start], text[end - 1]
        if first.isascii() and first.isalnum() and before.isascii() and before.isalnum():
            return False
        return not (last.isascii() and last.isalnum() and after.isascii() and after.isalnum())

    def _entity(self, kind: str, surface: str, start: int, end: int, values: tuple[str, ...]) -> Entity | None:
        if kind == "colour":
            family = colour_family(values[0])
            return Entity("color", values[0], surface, start, end, attrs={"family": family} if family else {})
        if kind == "size":
            return Entity("size", values[0], surface, start, end)
        if len(values) > _MAX_CANDIDATES or (len(values) > 1 and not any(c.isascii() and c.isalnum() for c in surface)):
            # A Chinese category word shared by several products ("礼品卡", "鼠标") names none of them; a shared
            # model name ("Vela X7") names its first variant and lists the others.
            return None
        skus = sorted(values, key=self._order.__getitem__)
        product = self.products[skus[0]]
        attrs: dict[str, object] = {"name_zh": product.name_zh, "name_en": product.name_en}
        if len(skus) > 1:
            attrs["candidates"] = skus
        return Entity("product", product.sku, surface, start, end, confidence=1.0 / len(skus), attrs=attrs)

    def _generic_colours(self, text: str, taken: list[tuple[int, int]]) -> list[Entity]:
        found = []
        for pattern in (_GENERIC_COLOUR_ZH, _GENERIC_COLOUR_EN):
            for m in pattern.finditer(text):
                start, end = m.span()
                if any(start < e and end > s for s, e in taken):
                    continue
                word = next(g for g in m.groups() if g)
                family = _FAMILY_WORDS.get(word.lower()) or _FAMILY_ZH.get(word) or _FAMILY_ZH.get(word[:1])
                if word == "咖啡":
                    family = "brown"
                if family is None:
                    continue
                taken.append((start, end))
                found.append(Entity("color", family, m.group(0), start, end, attrs={"family": family}))
        return found

    def _sizes(self, text: str, taken: list[tuple[int, int]]) -> list[Entity]:
        found = []
        for pattern in (_LETTER_SIZE, _NUMERIC_SIZE):
            for m in pattern.finditer(text):
                start, end = m.span()
                if any(start < e and end > s for s, e in taken):
                    continue
                value = next(g for g in m.groups() if g).upper()
                taken.append((start, end))
                found.append(Entity("size", value, m.group(0), start, end))
        return found

    def _near_word_uncached(self, token: str) -> bool:
        return process.extractOne(token, self._fuzzy_words, scorer=fuzz.ratio, score_cutoff=75) is not None

    def _closest_alias_uncached(self, query: str) -> tuple[str, float] | None:
        match = process.extractOne(query, self._fuzzy_keys, scorer=fuzz.ratio, score_cutoff=86)
        return None if match is None else (match[0], match[1])

    def _fuzzy_products(self, text: str, taken: list[tuple[int, int]]) -> list[Entity]:
        tokens = [(m.group(0).lower(), m.start(), m.end()) for m in _EN_TOKEN.finditer(text)]
        tokens = [t for t in tokens if not any(t[1] < e and t[2] > s for s, e in taken)]
        near = {i for i, (token, _, _) in enumerate(tokens) if len(token) >= 3 and self._near_word(token)}
        if not near:
            return []
        best: tuple[float, int, int, tuple[str, ...]] | None = None
        for width in (3, 2, 4):
            for i in range(len(tokens) - width + 1):
                window = tokens[i : i + width]
                if not near.intersection(range(i, i + width)):
                    continue
                query = "".join(w[0] for w in window)
                if len(query) < 6:
                    continue
                match = self._closest_alias(query)
                if match is not None and (best is None or match[1] > best[0]):
                    best = (match[1], window[0][1], window[-1][2], self._fuzzy_aliases[match[0]])
        if best is None:
            return []
        score, start, end, skus = best
        entity = self._entity("product", text[start:end], start, end, skus)
        if entity is None:
            return []
        attrs = {**entity.attrs, "fuzzy": True}
        return [Entity("product", entity.value, entity.text, start, end, confidence=score / 100, attrs=attrs)]

    def products_with_colour(self, family: str) -> list[str]:
        """SKUs offered in a colour family, in catalogue order."""
        return [p.sku for p in self.products.values() if any(colour_family(c) == family for c in p.colours)]
