"""What reads and writes share: the service context, row lookups and turning an order row into its API view."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lumo_shop.clock import Clock
from lumo_shop.dataset import ShopConfig
from lumo_shop.db import Order, Product
from lumo_shop.errors import NotFound
from lumo_shop.policy import Policy, ProductFacts
from lumo_shop.schemas import OrderOut


@dataclass(frozen=True, slots=True)
class ShopContext:
    """Built once in `create_app`: the shop's rules, the database and the clock."""

    shop: ShopConfig
    sessions: sessionmaker[Session]
    clock: Clock


def order_key(order_id: str) -> str:
    return order_id.strip().upper()


def load_order(session: Session, order_id: str) -> Order:
    row = session.get(Order, order_key(order_id))
    if row is None:
        raise NotFound("order_not_found", f"There is no order {order_id!r}; order numbers look like LM26110625.")
    return row


def save_order(row: Order, doc: dict[str, Any]) -> None:
    """Store a changed order document (a new object, so SQLAlchemy sees the change)."""
    row.doc = doc
    row.status = doc["status"]
    row.after_sale_id = (doc.get("after_sale") or {}).get("id")


def product_facts(session: Session, skus: Iterable[str]) -> dict[str, ProductFacts]:
    rows = session.scalars(select(Product).where(Product.sku.in_(set(skus))))
    return {row.sku: ProductFacts.from_doc(row.doc) for row in rows}


def policy_for(ctx: ShopContext, session: Session, doc: dict[str, Any]) -> Policy:
    products = product_facts(session, (item["sku"] for item in doc["items"]))
    return Policy(ctx.shop, doc, products, ctx.clock.now())


def order_out(ctx: ShopContext, session: Session, doc: dict[str, Any]) -> OrderOut:
    label = ctx.shop.status_label(doc["status"])
    view = policy_for(ctx, session, doc).view()
    return OrderOut.model_validate({**doc, "status_zh": label.zh, "status_en": label.en, "policy": view})


def iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")
