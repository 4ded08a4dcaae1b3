"""The text JSON columns are stored as, for every engine kefu opens (SQLite, PostgreSQL)."""

from __future__ import annotations

import json

import orjson


def json_text(value: object) -> str:
    """orjson's text (a turn stores its trace, a few kB, as JSON: the standard library's encoder had been about a
    hundredth of the event loop's time under load), or the standard library's for what orjson refuses (an integer
    beyond 64 bits; a type neither knows then fails as it always did)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


__all__ = ["json_text"]
