"""Product variants: the deterministic per-variant stock split and matching a requested colour or size."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

VariantKey = tuple[str | None, str | None]
"""(colour, size) exactly as the catalogue writes them, None where the product has no such option."""


def split_stock(sku: str, colors: Sequence[str], sizes: Sequence[str], total: int) -> list[tuple[VariantKey, int]]:
    """Share `total` among the product's colour × size variants, the same way on every seed.

    Products with three or more variants get about a quarter of them (at least one) at zero stock, so
    that exchange scenarios always meet an out-of-stock option; the rest share the total by hashed weights.
    """
    color_options: Sequence[str | None] = colors or [None]
    size_options: Sequence[str | None] = sizes or [None]
    keys: list[VariantKey] = [(c, s) for c in color_options for s in size_options]
    if len(keys) == 1:
        return [(keys[0], total)]
    ranked = sorted(keys, key=lambda k: _digest(sku, k))
    sold_out = set(ranked[: max(1, len(keys) // 4)]) if len(keys) >= 3 else set()
    in_stock = [k for k in keys if k not in sold_out]
    weights = [1 + _digest(sku, k) % 4 for k in in_stock]
    shares = [total * w // sum(weights) for w in weights]
    for i in range(total - sum(shares)):
        shares[i % len(shares)] += 1
    stock = dict(zip(in_stock, shares, strict=True))
    return [(k, stock.get(k, 0)) for k in keys]


def match_option(requested: str | None, options: Sequence[str]) -> str | None:
    """The catalogue option meant by `requested`: the full `中文/English` text, either half, any case."""
    if requested is None:
        return None
    wanted = _norm(requested)
    for option in options:
        forms = {_norm(option), *(_norm(part) for part in option.split("/"))}
        if wanted in forms:
            return option
    return None


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _digest(sku: str, key: VariantKey) -> int:
    raw = f"{sku}|{key[0] or ''}|{key[1] or ''}".encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")
