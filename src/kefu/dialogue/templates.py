"""Bilingual reply templates and policy conditions of flows: a sandboxed Jinja2 environment with shop filters."""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kefu.language import Language


def _money(value: Any, symbol: str = "¥") -> str:
    try:
        return f"{symbol}{float(value):,.2f}"
    except (TypeError, ValueError):
        return str(value)


def _parse(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


class FlowTemplates:
    """Compiles flow templates once and renders them per language; a flow file cannot reach Python internals."""

    def __init__(self) -> None:
        self.env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self.env.filters["money"] = _money
        self.env.filters["date"] = self._date
        self.env.filters["datetime"] = self._datetime
        self.env.filters["lang"] = self._lang
        self.env.filters["days_since"] = self._days_since
        self.env.filters["address_part"] = address_part
        self.env.filters["variants_like"] = variants_like
        self._templates: dict[str, Any] = {}
        self._expressions: dict[str, Any] = {}

    @staticmethod
    def check_template(source: str) -> None:
        """Raise ValueError when `source` is not a valid template (called while a flow file is validated)."""
        try:
            _checker().compile(source)  # compiling, not only parsing, finds unknown filters before a customer does
        except TemplateSyntaxError as exc:
            raise ValueError(f"template error: {exc.message}") from None

    @staticmethod
    def check_expression(source: str) -> None:
        env = _checker()
        try:
            env.compile_expression(source)
        except TemplateSyntaxError as exc:
            raise ValueError(f"condition error in {source!r}: {exc.message}") from None

    def render(self, source: str, variables: dict[str, Any]) -> str:
        template = self._templates.get(source)
        if template is None:
            template = self._templates[source] = self.env.from_string(source)
        return str(template.render(**variables)).strip()

    def evaluate(self, source: str, variables: dict[str, Any]) -> Any:
        expression = self._expressions.get(source)
        if expression is None:
            expression = self._expressions[source] = self.env.compile_expression(source, undefined_to_none=False)
        return expression(**variables)

    @staticmethod
    def _date(value: Any, language: Language = "zh") -> str:
        at = _parse(value)
        if at is None:
            return str(value or "")
        return f"{at.year}年{at.month}月{at.day}日" if language == "zh" else at.strftime("%d %b %Y")

    @staticmethod
    def _datetime(value: Any, language: Language = "zh") -> str:
        at = _parse(value)
        if at is None:
            return str(value or "")
        if language == "zh":
            return f"{at.month}月{at.day}日 {at:%H:%M}"
        return at.strftime("%d %b %H:%M")

    @staticmethod
    def _lang(value: Any, language: Language = "zh") -> Any:
        """Pick the language's text from `{zh:…, en:…}` or from `name_zh`/`name_en`-style pairs (`field|lang(lang)`)."""
        if isinstance(value, dict):
            return value.get(language) or value.get("zh") or value.get("en") or ""
        if isinstance(value, str) and "/" in value:
            zh, _, en = value.partition("/")
            return zh if language == "zh" else en
        return value

    @staticmethod
    def _days_since(value: Any, now: datetime) -> int | None:
        at = _parse(value)
        if at is None:
            return None
        if (at.tzinfo is None) != (now.tzinfo is None):
            # a bare date ("2026-11-13") from a backend is a day in the shop's zone, the clock's
            at = at.replace(tzinfo=now.tzinfo)
        return (now - at).days


_ADDRESS = re.compile(
    r"^(?P<province>[^省市区]{2,5}(?:省|自治区)|北京市?|上海市?|天津市?|重庆市?)?"
    r"(?P<city>[^市]{1,8}?(?:市|自治州|地区|盟))?"
    r"(?P<district>[^区县]{1,8}?(?:区|县|旗))?"
    r"(?P<street>.*)$"
)


_MUNICIPALITIES = ("北京", "上海", "天津", "重庆")


def address_part(address: Any, part: str) -> str:
    """One part of a Chinese address (province, city, district, street) for backends that want them apart."""
    text = re.sub(r"\s+", "", str(address or ""))
    match = _ADDRESS.match(text)
    if match is None:
        return text if part == "street" else ""
    value = match.group(part) or ""
    province = re.sub(r"(?:壮族|回族|维吾尔)?(?:省|市|自治区)$", "", match.group("province") or "")
    if part == "province":
        return province  # as the shop's records write it: 上海, 广东
    if part == "city" and not value and province in _MUNICIPALITIES:
        return province + "市"
    return value


def referenced_names(source: str, *, expression: bool = False) -> set[str]:
    """Top-level variable names a template or condition reads (load-time checks of flow files)."""
    env = ImmutableSandboxedEnvironment()
    tree = env.parse("{{ " + source + " }}" if expression else source)
    return {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}


@functools.cache
def _checker() -> ImmutableSandboxedEnvironment:
    """An environment with kefu's filters, for validating conditions (Jinja resolves filters when compiling)."""
    return FlowTemplates().env


def variants_like(variants: Any, attribute: str, wanted: Any) -> list[Any]:
    """The variants whose `attribute` (color/size) is what the customer asked for: the catalogue's exact name
    ("樱花粉/Blossom Pink"), either half of it, or a word of it ("pink", "樱花粉"); exact matches first."""
    if not isinstance(variants, list) or wanted is None:
        return []
    target = str(wanted).strip().casefold()
    halves = {h.strip() for h in target.split("/") if h.strip()}
    exact, partial = [], []
    for variant in variants:
        value = variant.get(attribute) if isinstance(variant, dict) else None
        if not isinstance(value, str) or not value:
            continue
        name = value.casefold()
        parts = {p.strip() for p in name.split("/") if p.strip()}
        if name == target or parts & halves:
            exact.append(variant)
        elif any(h in part or (len(part) >= 2 and part in h) for h in halves for part in parts) or any(
            h in name.split() for h in halves
        ):
            partial.append(variant)
    return exact or partial
