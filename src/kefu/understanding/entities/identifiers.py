"""Order, tracking and after-sales numbers in the shop's own formats, phone numbers and e-mail addresses."""

from __future__ import annotations

import re
from collections.abc import Mapping

import phonenumbers

from kefu.errors import ConfigError
from kefu.understanding.types import Entity

# ASCII-only boundaries: in Python every CJK character is a \w, and "邮箱abc@x.com" has no space.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._+-])[A-Za-z0-9][A-Za-z0-9._+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)
# A Chinese mobile number may be written with spaces or dashes (138 1234 5678) and a +86 / 0086 prefix;
# phonenumbers then validates it and formats it as E.164.
_PHONE_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9+])(?:\+?86[\s-]?|0086[\s-]?)?(?:1[3-9]\d(?:[\s-]?\d{4}){2}|0\d{2,3}-?\d{7,8}|400-?\d{3}-?\d{4})(?!\d)"
)

# The input guard replaces personal data with placeholders such as "[PHONE_1:5678]" before understanding
# runs; the placeholder stands for the value (the session's PII vault resolves it for backend actions).
_REDACTED = re.compile(r"\[(PHONE|LANDLINE|EMAIL|ADDRESS)_(\d+)(?::([0-9Xx]{4}))?\]")
_REDACTED_TYPES = {"PHONE": "phone", "LANDLINE": "phone", "EMAIL": "email", "ADDRESS": "address"}
_SPACES = re.compile(r"\s{2,}")
# Where a reference number was: the label that names it ("订单号：", "order no.", "#") and brackets around both
# belong to the reference, not to what the customer asks ("退货 (order LM26110001)" is a return question).
_REFERENCE = "\x00"
_NOUNS_EN = r"order|tracking|waybill|parcel|after[- ]?sales?|return|refund"
"""English names of a reference number: labels with "number"/"no."/"#" after them, or bare in brackets."""
_LABEL_WORDS = (
    r"(?:(?:订单|运单|快递单|物流单|售后单|退货单|退款单|工单|快递|物流|售后)?(?:编号|号码|单号|号)"
    rf"|(?:{_NOUNS_EN}|case|ticket|rma)\s*"
    r"(?:number|no\.?|num\.?|id|code|#|[:：])"
    r"|#)"
)
# In brackets, a bare word names the number too: "(order LM26110001)"; outside them "my order" is kept.
_LABEL_IN_BRACKETS = rf"(?:{_NOUNS_EN}|订单|运单|快递|物流|售后)"
_REFERENCE_WITH_LABEL = re.compile(
    rf"[(（\[【]\s*(?:(?:{_LABEL_WORDS}|{_LABEL_IN_BRACKETS})\s*[:：#]?\s*)?{_REFERENCE}\s*[)）\]】]"
    rf"|(?:{_LABEL_WORDS}\s*[:：#]?\s*)?{_REFERENCE}",
    re.IGNORECASE,
)


def _searchable(anchored: str) -> re.Pattern[str]:
    """A `^...$` format pattern turned into one that finds the value inside a sentence."""
    body = anchored.removeprefix("^").removesuffix("$")
    try:
        return re.compile(rf"(?<![A-Za-z0-9])(?:{body})(?![A-Za-z0-9])", re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"shop.yaml: invalid number pattern {anchored!r}: {exc}") from None


class IdentifierExtractor:
    """Finds the shop's reference numbers (formats from shop.yaml), phones and e-mails."""

    def __init__(
        self,
        *,
        order_number: str | None,
        tracking_numbers: Mapping[str, str],
        after_sale_id: str | None = None,
        phone_region: str = "CN",
    ) -> None:
        self._order = _searchable(order_number) if order_number else None
        self._after_sale = _searchable(after_sale_id) if after_sale_id else None
        self._tracking = [(carrier, _searchable(p)) for carrier, p in tracking_numbers.items()]
        self._references = tuple(
            p for p in (self._order, self._after_sale, *(pattern for _, pattern in self._tracking)) if p is not None
        )
        self._region = phone_region
        # phonenumbers loads its metadata on first use (milliseconds); pay that at start-up, not in a turn.
        self._phone("13800000000")

    @property
    def reference_patterns(self) -> tuple[str, ...]:
        """The patterns `without_references` removes (part of a trained classifier's cache key)."""
        return (*(p.pattern for p in self._references), _REFERENCE_WITH_LABEL.pattern)

    def without_references(self, text: str) -> str:
        """The text without the shop's order, after-sale and tracking numbers, for reading what it is about.

        A number says which order, not what the customer wants: "收到的商品有破损，怎么办？ 订单号 LM26000123" is
        about a damaged item, while intent examples that quote numbers are mostly order-tracking ones. The label
        that names the number ("订单号", "order no.") and brackets around both go with it. A text that is nothing
        but a reference stays as it is.
        """
        stripped = text
        for pattern in self._references:
            stripped = pattern.sub(_REFERENCE, stripped)
        if stripped == text:
            return text
        stripped = _SPACES.sub(" ", _REFERENCE_WITH_LABEL.sub(" ", stripped)).strip()
        return stripped if stripped else text

    def extract(self, text: str) -> list[Entity]:
        found: list[Entity] = []
        taken: list[tuple[int, int]] = []

        def free(start: int, end: int) -> bool:
            return all(end <= s or start >= e for s, e in taken)

        def add(entity: Entity) -> None:
            found.append(entity)
            taken.append((entity.start, entity.end))

        if self._order is not None:
            for m in self._order.finditer(text):
                if free(m.start(), m.end()):
                    add(Entity("order_number", m.group(0).upper(), m.group(0), m.start(), m.end()))
        if self._after_sale is not None:
            for m in self._after_sale.finditer(text):
                if free(m.start(), m.end()):
                    add(Entity("after_sale_id", m.group(0).upper(), m.group(0), m.start(), m.end()))
        for carrier, pattern in self._tracking:
            for m in pattern.finditer(text):
                if free(m.start(), m.end()):
                    value = m.group(0).upper()
                    add(Entity("tracking_number", value, m.group(0), m.start(), m.end(), attrs={"carrier": carrier}))
        for m in _REDACTED.finditer(text):
            attrs: dict[str, object] = {"redacted": True}
            if m.group(3):
                attrs["last4"] = m.group(3)
            add(Entity(_REDACTED_TYPES[m.group(1)], m.group(0), m.group(0), m.start(), m.end(), attrs=attrs))
        for m in _EMAIL.finditer(text):
            if free(m.start(), m.end()):
                add(Entity("email", m.group(0).lower(), m.group(0), m.start(), m.end()))
        for m in _PHONE_CANDIDATE.finditer(text):
            if not free(m.start(), m.end()):
                continue
            phone = self._phone(m.group(0))
            if phone is not None:
                add(Entity("phone", phone, m.group(0), m.start(), m.end()))
        return found

    def _phone(self, raw: str) -> str | None:
        try:
            number = phonenumbers.parse(raw, self._region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(number):
            return None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
