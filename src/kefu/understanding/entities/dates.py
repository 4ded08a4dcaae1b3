"""Absolute and relative dates in Chinese and English, resolved to ISO dates against the turn's clock.

Rules, not a model: "昨天", "上周五", "3天前", "下个月5号", "last Monday", "in 2 days", "Nov 3" each
mean one day given "now". A bare weekday ("周三", "on Wednesday") is that day of the current week
(weeks start on Monday); a month and day without a year is this year's, unless that is more than six
months ahead, when it is last year's (customers mostly talk about orders already placed).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from kefu.safety.prefilter import PatternSet
from kefu.understanding.entities.text import CN_NUMERAL, EN_NUMBER_WORDS, parse_number
from kefu.understanding.types import Entity

_ZH_WEEKDAY = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6, "末": 5, "1": 0, "2": 1}
_ZH_WEEKDAY.update({"3": 2, "4": 3, "5": 4, "6": 5, "7": 6})
_EN_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EN_WEEKDAY = {name: i for i, name in enumerate(_EN_WEEKDAYS)} | {name[:3]: i for i, name in enumerate(_EN_WEEKDAYS)}
_EN_WEEKDAY |= {"tue": 1, "tues": 1, "wed": 2, "thu": 3, "thur": 3, "thurs": 3}
_EN_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_EN_MONTH = {name: i + 1 for i, name in enumerate(_EN_MONTHS)} | {name[:3]: i + 1 for i, name in enumerate(_EN_MONTHS)}
_EN_MONTH["sept"] = 9

_NUM = rf"(?:\d{{1,3}}|{CN_NUMERAL}{{1,4}})"
_ZH_DAY_WORDS = {"今天": 0, "今日": 0, "明天": 1, "明日": 1, "后天": 2, "大后天": 3, "昨天": -1, "昨日": -1}
_ZH_DAY_WORDS |= {"前天": -2, "大前天": -3, "前日": -2}
_EN_DAY_WORDS = {"today": 0, "tonight": 0, "tomorrow": 1, "yesterday": -1}
_EN_DAY_WORDS |= {"the day before yesterday": -2, "the day after tomorrow": 2}

_MONTH_NAMES = "|".join(sorted(_EN_MONTH, key=len, reverse=True))
_WEEKDAY_NAMES = "|".join(sorted(_EN_WEEKDAY, key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th)?"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("iso", re.compile(r"(?<!\d)(20\d{2})[-/.年](\d{1,2})[-/.月](\d{1,2})[日号]?(?!\d)")),
    ("zh_month_day", re.compile(rf"(?:(上|下|这|本)个?月|({_NUM})月份?)({_NUM})[日号]")),
    ("zh_day_of_month", re.compile(rf"(?<![月\d{CN_NUMERAL[1:-1]}])({_NUM})[号](?![码])")),
    ("zh_relative_span", re.compile(rf"({_NUM}|半)个?(天|日|周|星期|礼拜|月)(?:之|以)?(前|后)")),
    ("zh_weekday", re.compile(r"(上上|上|下下|下|这|本)?个?(?:周|星期|礼拜)([一二三四五六日天1-7])")),
    ("zh_day_word", re.compile("|".join(sorted(_ZH_DAY_WORDS, key=len, reverse=True)))),
    ("en_relative_span", re.compile(rf"(?i)\b(\d{{1,3}}|{EN_NUMBER_WORDS})\s+(day|week|month)s?\s+(ago|later)\b")),
    ("en_in_span", re.compile(rf"(?i)\bin\s+(\d{{1,3}}|{EN_NUMBER_WORDS})\s+(day|week)s?\b")),
    ("en_weekday", re.compile(rf"(?i)\b(?:(last|this|next|on|coming)\s+)?({_WEEKDAY_NAMES})\b\.?")),
    (
        "en_day_word",
        re.compile(r"(?i)\b(the day before yesterday|the day after tomorrow|today|tonight|tomorrow|yesterday)\b"),
    ),
    ("en_month_day", re.compile(rf"(?i)\b({_MONTH_NAMES})\.?\s+(\d{{1,2}}){_ORD}\b(?:,?\s+(20\d{{2}}))?")),
    ("en_day_month", re.compile(rf"(?i)\b(\d{{1,2}}){_ORD}\s+(?:of\s+)?({_MONTH_NAMES})\b\.?(?:,?\s+(20\d{{2}}))?")),
    ("slash", re.compile(r"(?<![\d/.])(\d{1,2})/(\d{1,2})(?![\d/])")),
]
_PREFILTER = PatternSet([pattern for _, pattern in _PATTERNS])
"""Which patterns may match, in one RE2 pass: most messages hold no date, and searching each pattern in turn cost
more than any other entity's extraction."""


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _guess_year(today: date, month: int, day: int) -> date | None:
    candidate = _safe_date(today.year, month, day)
    if candidate is not None and (candidate - today).days > 183:
        candidate = _safe_date(today.year - 1, month, day)
    return candidate


def _add_months(day: date, months: int, day_of_month: int | None = None) -> date | None:
    index = day.year * 12 + day.month - 1 + months
    return _safe_date(index // 12, index % 12 + 1, day_of_month or day.day)


def _int(token: str) -> int | None:
    value = parse_number(token)
    return int(value) if value is not None and value == int(value) else None


class DateExtractor:
    """Finds dates in a message; `now` is the turn's clock in the shop's time zone."""

    def extract(self, text: str, now: datetime) -> list[Entity]:
        return self.extract_on(text, now.date())

    def extract_on(self, text: str, today: date) -> list[Entity]:
        """The dates in `text`, relative ones resolved against `today` (all a date depends on)."""
        found: list[Entity] = []
        taken: list[tuple[int, int]] = []
        for kind, pattern in _PREFILTER.select(_PATTERNS, text):
            for m in pattern.finditer(text):
                if any(m.start() < e and m.end() > s for s, e in taken):
                    continue
                resolved = self._resolve(kind, m, today)
                if resolved is None:
                    continue
                value, relative = resolved
                surface = m.group(0).strip().rstrip(".")
                start = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
                entity = Entity(
                    "date", value.isoformat(), surface, start, start + len(surface), attrs={"relative": relative}
                )
                found.append(entity)
                taken.append((m.start(), m.end()))
        found.sort(key=lambda e: e.start)
        return found

    def _resolve(self, kind: str, m: re.Match[str], today: date) -> tuple[date, bool] | None:
        resolver = getattr(self, f"_{kind}")
        result: tuple[date, bool] | None = resolver(m, today)
        return result

    @staticmethod
    def _iso(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        value = _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return (value, False) if value else None

    @staticmethod
    def _zh_month_day(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        day = _int(m.group(3))
        if day is None:
            return None
        if m.group(1):
            shift = {"上": -1, "下": 1}.get(m.group(1), 0)
            value = _add_months(today, shift, day)
            return (value, True) if value else None
        month = _int(m.group(2))
        if month is None:
            return None
        value = _guess_year(today, month, day)
        return (value, False) if value else None

    @staticmethod
    def _zh_day_of_month(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        day = _int(m.group(1))
        if day is None or not 1 <= day <= 31:
            return None
        value = _safe_date(today.year, today.month, day)
        if value is not None and value > today + timedelta(days=7):
            # "15号签收的" said on the 3rd means last month's 15th.
            value = _add_months(today, -1, day)
        return (value, True) if value else None

    @staticmethod
    def _zh_relative_span(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        count = 0.5 if m.group(1) == "半" else _int(m.group(1))
        if count is None:
            return None
        sign = -1 if m.group(3) == "前" else 1
        unit = m.group(2)
        if unit == "月":
            if count == 0.5:
                return today + timedelta(days=sign * 15), True
            value = _add_months(today, sign * int(count))
            return (value, True) if value else None
        days = count * (7 if unit in ("周", "星期", "礼拜") else 1)
        return today + timedelta(days=sign * int(days)), True

    @staticmethod
    def _zh_weekday(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        weekday = _ZH_WEEKDAY[m.group(2)]
        shift = {"上上": -2, "上": -1, "下下": 2, "下": 1}.get(m.group(1) or "", 0)
        monday = today - timedelta(days=today.weekday())
        return monday + timedelta(weeks=shift, days=weekday), True

    @staticmethod
    def _zh_day_word(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        return today + timedelta(days=_ZH_DAY_WORDS[m.group(0)]), True

    @staticmethod
    def _en_relative_span(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        count = _int(m.group(1).lower())
        if count is None:
            return None
        sign = -1 if m.group(3).lower() == "ago" else 1
        unit = m.group(2).lower()
        if unit == "month":
            value = _add_months(today, sign * count)
            return (value, True) if value else None
        return today + timedelta(days=sign * count * (7 if unit == "week" else 1)), True

    @staticmethod
    def _en_in_span(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        count = _int(m.group(1).lower())
        if count is None:
            return None
        return today + timedelta(days=count * (7 if m.group(2).lower() == "week" else 1)), True

    @staticmethod
    def _en_weekday(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        word = m.group(2).lower()
        qualifier = (m.group(1) or "").lower()
        if not qualifier and word in ("sat", "sun", "mon", "wed", "thu", "fri", "tue", "tues") and m.group(2).islower():
            return None  # lower-case abbreviations without "last/next" are too often something else
        weekday = _EN_WEEKDAY[word]
        monday = today - timedelta(days=today.weekday())
        this_week = monday + timedelta(days=weekday)
        if qualifier == "last":
            # "last Friday" said on a Saturday is yesterday's Friday; said on a Friday, a week ago.
            value = this_week if this_week < today else this_week - timedelta(weeks=1)
        elif qualifier in ("next", "coming"):
            value = this_week if this_week > today else this_week + timedelta(weeks=1)
        else:
            value = this_week
        return value, True

    @staticmethod
    def _en_day_word(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        return today + timedelta(days=_EN_DAY_WORDS[m.group(1).lower()]), True

    @staticmethod
    def _en_month_day(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        month = _EN_MONTH[m.group(1).lower()]
        if m.group(1).lower() == "may" and not m.group(3) and m.group(1) == "may":
            return None  # "may 2 people …": the verb, not the month
        day = int(m.group(2))
        value = _safe_date(int(m.group(3)), month, day) if m.group(3) else _guess_year(today, month, day)
        return (value, not m.group(3)) if value else None

    @staticmethod
    def _en_day_month(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        month = _EN_MONTH[m.group(2).lower()]
        day = int(m.group(1))
        value = _safe_date(int(m.group(3)), month, day) if m.group(3) else _guess_year(today, month, day)
        return (value, not m.group(3)) if value else None

    @staticmethod
    def _slash(m: re.Match[str], today: date) -> tuple[date, bool] | None:
        first, second = int(m.group(1)), int(m.group(2))
        # Month/day as customers here write it; day/month only when the first number cannot be a month.
        month, day = (first, second) if first <= 12 else (second, first)
        value = _guess_year(today, month, day)
        return (value, False) if value else None
