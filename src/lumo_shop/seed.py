"""Fills an empty database from the demo dataset, once; later starts reuse it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from lumo_shop.dataset import Dataset
from lumo_shop.db import Base, Meta, Order, Product, ReasonLabel, Shipment, User, Variant, open_engine
from lumo_shop.variants import split_stock

SEEDED_KEY = "seeded_from"


def seed(db_path: Path, data_dir: Path, reset: bool = False) -> bool:
    """Load `data_dir` into the SQLite file at `db_path` unless it already holds data; True when it loaded."""
    engine = open_engine(db_path)
    try:
        return seed_engine(engine, Dataset(data_dir), reset=reset)
    finally:
        engine.dispose()


def seed_engine(engine: Engine, dataset: Dataset, *, reset: bool = False) -> bool:
    if reset:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        if session.scalar(select(Meta).where(Meta.key == SEEDED_KEY)) is not None:
            return False
        _load(session, dataset)
    return True


def reseed_engine(engine: Engine, dataset: Dataset) -> int:
    """Empty every table, write log included, and load the dataset again, in one transaction: readers see the
    old data or the new, never an empty shop. Returns the number of orders loaded."""
    with Session(engine) as session, session.begin():
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())
        return _load(session, dataset)


def _load(session: Session, dataset: Dataset) -> int:
    session.add_all(_users(dataset))
    for product, variants in _products(dataset):
        session.add(product)
        session.add_all(variants)
    orders = dataset.orders()
    session.add_all(_order_row(o) for o in orders)
    session.add_all(
        Shipment(tracking_number=s["tracking_number"], order_id=s["order_id"], doc=s) for s in dataset.shipments()
    )
    session.add_all(_reason_labels(orders))
    stamp = f"{dataset.root.resolve()} at {datetime.now(UTC).isoformat(timespec='seconds')}"
    session.add(Meta(key=SEEDED_KEY, value=stamp))
    return len(orders)


def _users(dataset: Dataset) -> list[User]:
    rows = []
    for raw in dataset.users():
        doc: dict[str, Any] = dict(raw)
        doc["points_balance"] = int(raw["points_balance"] or 0)
        rows.append(User(user_id=raw["user_id"], name=raw["name"], phone=raw["phone"], doc=doc))
    return rows


def _products(dataset: Dataset) -> list[tuple[Product, list[Variant]]]:
    out = []
    for raw in dataset.products():
        colors = [c for c in raw["colors"].split("|") if c]
        sizes = [s for s in raw["sizes"].split("|") if s]
        doc: dict[str, Any] = {
            **raw,
            "price": float(raw["price"]),
            "colors": colors,
            "sizes": sizes,
            "stock": int(raw["stock"]),
            "specs": json.loads(raw["specs"]) if raw["specs"] else {},
            "warranty_months": int(raw["warranty_months"]),
            "returnable": raw["returnable"].strip().lower() == "true",
        }
        product = Product(sku=raw["sku"], category=raw["category"], returnable=doc["returnable"], doc=doc)
        variants = [
            Variant(sku=raw["sku"], color=color, size=size, stock=stock)
            for (color, size), stock in split_stock(raw["sku"], colors, sizes, doc["stock"])
        ]
        out.append((product, variants))
    return out


def _order_row(doc: dict[str, Any]) -> Order:
    after_sale = doc.get("after_sale") or {}
    return Order(
        order_id=doc["order_id"],
        user_id=doc["user_id"],
        status=doc["status"],
        created_at=doc["created_at"],
        after_sale_id=after_sale.get("id"),
        doc=doc,
    )


def _reason_labels(orders: list[dict[str, Any]]) -> list[ReasonLabel]:
    labels: dict[tuple[str, str], ReasonLabel] = {}
    for o in orders:
        found = [("cancel", o.get("cancel_reason")), ("after_sale", (o.get("after_sale") or {}).get("reason"))]
        for kind, reason in found:
            if reason:
                labels[kind, reason["code"]] = ReasonLabel(
                    kind=kind, code=reason["code"], zh=reason["zh"], en=reason["en"]
                )
    return list(labels.values())
