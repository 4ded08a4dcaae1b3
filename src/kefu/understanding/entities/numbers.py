"""Amounts of money and quantities, with Arabic or Chinese numerals ("¥299", "三千五百块", "2 pairs", "两件")."""

from __future__ import annotations

import re

from kefu.understanding.entities.text import CN_NUMERAL, EN_NUMBER_WORDS, parse_number
from kefu.understanding.types import Entity

_ARABIC = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_NUMBER = rf"(?:{_ARABIC}|{CN_NUMERAL}{{1,8}})"
_SCALE = r"(?:[kK千]|[wW万])"
_CURRENCY_PREFIX = {"¥": "CNY", "￥": "CNY", "rmb": "CNY", "cny": "CNY", "$": "USD", "usd": "USD", "us$": "USD"}
_CURRENCY_PREFIX |= {"€": "EUR", "eur": "EUR", "hk$": "HKD", "hkd": "HKD"}
_CURRENCY_SUFFIX = {"元": "CNY", "块钱": "CNY", "块": "CNY", "元钱": "CNY", "rmb": "CNY", "yuan": "CNY", "cny": "CNY"}
_CURRENCY_SUFFIX |= {"美元": "USD", "美金": "USD", "dollars": "USD", "dollar": "USD", "usd": "USD", "bucks": "USD"}
_CURRENCY_SUFFIX |= {"欧元": "EUR", "euros": "EUR", "euro": "EUR", "eur": "EUR", "港币": "HKD", "港元": "HKD"}

_PREFIX_NAMES = "|".join(re.escape(k) for k in sorted(_CURRENCY_PREFIX, key=len, reverse=True))
_SUFFIX_NAMES = "|".join(re.escape(k) for k in sorted(_CURRENCY_SUFFIX, key=len, reverse=True))

_AMOUNT_PREFIXED = re.compile(rf"(?i)(?<![A-Za-z])({_PREFIX_NAMES})\s?({_ARABIC})({_SCALE})?(?![\d.])")
_AMOUNT_SUFFIXED = re.compile(
    rf"(?i)(?<![\d.A-Za-z])({_NUMBER})\s?({_SCALE})?\s?({_SUFFIX_NAMES})(?![A-Za-z])(?![手表面蛋])"
)
# "满99减20", "差价100": thresholds and differences are money even without a currency word.
_AMOUNT_CUE = re.compile(
    rf"(满|减|差价|便宜了?|贵了?|退了?|付了?|花了?|多收了?|少退了?)\s?({_ARABIC})(?![\d.%])(?!\s?[元块件个天号])"
)

_ZH_UNITS = "个件台只双套部盒包张条把瓶副对片箱袋支根"
_EN_UNITS = r"pcs|pieces?|units?|items?|pairs?|sets?|boxes|box|packs?|bottles?|bags?|cases?"
# "一个" is far more often an article ("我有一个问题") than a count, so Chinese "one" is not a quantity.
_QUANTITY_ZH = re.compile(rf"(?<!第)(?<![\d.])({_ARABIC}|[两二三四五六七八九十]{{1,3}})([{_ZH_UNITS}])(?!装)")
_QUANTITY_EN = re.compile(
    rf"(?i)\b(\d+|{EN_NUMBER_WORDS})\s+({_EN_UNITS})\b|(?<![A-Za-z0-9])[x×]\s?(\d+)\b|\b(\d+)\s?[x×](?![A-Za-z0-9])"
)
_QTY_WORD = re.compile(r"(?i)\b(?:qty|quantity|数量)\s*[:：]?\s*(\d+)")


class NumberExtractor:
    """Money (value with two decimals, currency in attrs) and quantities (value, unit in attrs)."""

    def __init__(self, default_currency: str = "CNY") -> None:
        self.default_currency = default_currency

    def extract(self, text: str) -> list[Entity]:
        found: list[Entity] = []
        taken: list[tuple[int, int]] = []

        def add(entity: Entity) -> None:
            if any(entity.start < e and entity.end > s for s, e in taken):
                return
            found.append(entity)
            taken.append((entity.start, entity.end))

        for m in _AMOUNT_PREFIXED.finditer(text):
            value = self._scaled(m.group(2), m.group(3))
            if value is not None:
                add(self._amount(m, value, _CURRENCY_PREFIX[m.group(1).lower()]))
        for m in _AMOUNT_SUFFIXED.finditer(text):
            value = self._scaled(m.group(1), m.group(2))
            if value is not None and value > 0:
                add(self._amount(m, value, _CURRENCY_SUFFIX[m.group(3).lower()]))
        for m in _AMOUNT_CUE.finditer(text):
            value = parse_number(m.group(2))
            if value is not None:
                start = m.start(2)
                currency = {"currency": self.default_currency}
                add(Entity("amount", f"{value:.2f}", m.group(2), start, m.end(2), attrs=currency))
        for m in _QUANTITY_ZH.finditer(text):
            count = parse_number(m.group(1))
            if count is not None and count == int(count) and 0 < count < 1000:
                add(Entity("quantity", str(int(count)), m.group(0), m.start(), m.end(), attrs={"unit": m.group(2)}))
        for m in _QUANTITY_EN.finditer(text):
            raw = m.group(1) or m.group(3) or m.group(4)
            count = parse_number(raw)
            if count is not None and count == int(count) and 0 < count < 1000:
                unit = (m.group(2) or "").lower()
                add(Entity("quantity", str(int(count)), m.group(0), m.start(), m.end(), attrs={"unit": unit}))
        for m in _QTY_WORD.finditer(text):
            add(Entity("quantity", str(int(m.group(1))), m.group(0), m.start(), m.end()))
        found.sort(key=lambda e: e.start)
        return found

    @staticmethod
    def _scaled(number: str, scale: str | None) -> float | None:
        value = parse_number(number)
        if value is None:
            return None
        if scale:
            value *= 1000 if scale in "kK千" else 10000
        return value

    @staticmethod
    def _amount(m: re.Match[str], value: float, currency: str) -> Entity:
        return Entity("amount", f"{value:.2f}", m.group(0).strip(), m.start(), m.end(), attrs={"currency": currency})
