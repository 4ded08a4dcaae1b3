"""The read side of the shop: identity checks, users, orders, parcels, products, refunds and the write log."""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from lumo_shop.db import Order, Product, Shipment, User, Variant, Write
from lumo_shop.errors import Invalid, NotFound
from lumo_shop.policy import parse_time
from lumo_shop.schemas import (
    OrderList,
    OrderOut,
    OrderSummary,
    ProductMatch,
    ProductOut,
    ProductSearch,
    RefundStatus,
    ShipmentList,
    ShipmentOut,
    UserOut,
    VerifyRequest,
    VerifyResult,
    WriteList,
    WriteRecord,
)
from lumo_shop.views import ShopContext, load_order, order_key, order_out

MAX_ORDERS = 100


class ShopReads:
    """Answers every GET (and the identity check, which changes nothing)."""

    def __init__(self, ctx: ShopContext) -> None:
        self.ctx = ctx

    def verify_identity(self, request: VerifyRequest) -> VerifyResult:
        digits = normalize_phone(request.phone)
        if len(digits) not in (4, 11):
            raise Invalid("invalid_phone", "Give the full 11-digit mobile number or its last 4 digits.")
        if not request.order_id and not request.user_id:
            raise Invalid("invalid_request", "Give an order_id or a user_id together with the phone number.")
        with self.ctx.sessions() as session:
            user: User | None
            if request.order_id:
                order = session.get(Order, order_key(request.order_id))
                if order is None:
                    return VerifyResult(verified=False, reason="order_not_found")
                if request.user_id and request.user_id.strip().upper() != order.user_id:
                    return VerifyResult(verified=False, reason="mismatch")
                user = session.get(User, order.user_id)
                phones = [order.doc["address"]["phone"], user.phone if user else ""]
                name = user.name if user else order.doc["address"]["recipient"]
                user_id = order.user_id
            else:
                user = session.get(User, (request.user_id or "").strip().upper())
                if user is None:
                    return VerifyResult(verified=False, reason="user_not_found")
                phones, name, user_id = [user.phone], user.name, user.user_id
        if not any(phone and (phone == digits or (len(digits) == 4 and phone.endswith(digits))) for phone in phones):
            return VerifyResult(verified=False, reason="mismatch")
        return VerifyResult(verified=True, user_id=user_id, name_masked=mask_name(name))

    def get_user(self, user_id: str) -> UserOut:
        with self.ctx.sessions() as session:
            user = _load_user(session, user_id)
            doc = user.doc
            return UserOut(
                user_id=user.user_id,
                name=user.name,
                member_tier=doc["member_tier"],
                preferred_lang=doc["preferred_lang"],
                phone_masked=mask_phone(user.phone),
                email_masked=mask_email(doc.get("email") or ""),
                points_balance=int(doc["points_balance"]),
            )

    def list_user_orders(self, user_id: str, status: str | None, limit: int) -> OrderList:
        if status is not None and status not in self.ctx.shop.order_statuses:
            known = ", ".join(self.ctx.shop.order_statuses)
            raise Invalid("invalid_status", f"Unknown order status {status!r}; use one of: {known}.")
        with self.ctx.sessions() as session:
            user = _load_user(session, user_id)
            query = select(Order).where(Order.user_id == user.user_id)
            if status is not None:
                query = query.where(Order.status == status)
            rows = session.scalars(query.order_by(Order.created_at.desc()).limit(min(limit, MAX_ORDERS)))
            summaries = []
            for row in rows:
                doc = row.doc
                label = self.ctx.shop.status_label(doc["status"])
                summaries.append(
                    OrderSummary.model_validate(
                        {**doc, "status_zh": label.zh, "status_en": label.en, "items": doc["items"]}
                    )
                )
            return OrderList(orders=summaries)

    def get_order(self, order_id: str) -> OrderOut:
        with self.ctx.sessions() as session:
            return order_out(self.ctx, session, load_order(session, order_id).doc)

    def get_order_logistics(self, order_id: str) -> ShipmentList:
        with self.ctx.sessions() as session:
            order = load_order(session, order_id)
            rows = session.scalars(select(Shipment).where(Shipment.order_id == order.order_id)).all()
            shipments = sorted(
                (_shipment(row) for row in rows), key=lambda s: s.events[0].time.isoformat() if s.events else ""
            )
            return ShipmentList(order_id=order.order_id, shipments=shipments)

    def get_tracking(self, tracking_number: str) -> ShipmentOut:
        with self.ctx.sessions() as session:
            row = session.get(Shipment, tracking_number.strip().upper())
            if row is None:
                raise NotFound("tracking_not_found", f"No parcel with tracking number {tracking_number!r}.")
            return _shipment(row)

    def get_product(self, sku: str) -> ProductOut:
        with self.ctx.sessions() as session:
            product = session.get(Product, sku.strip().upper())
            if product is None:
                raise NotFound("product_not_found", f"No product {sku!r}; SKUs look like LM-AU-001.")
            variants = session.scalars(select(Variant).where(Variant.sku == product.sku).order_by(Variant.id)).all()
            category = self.ctx.shop.categories.get(product.category)
            return ProductOut.model_validate(
                {
                    **product.doc,
                    "category_zh": category.zh if category else product.category,
                    "category_en": category.en if category else product.category,
                    "stock": sum(v.stock for v in variants),
                    "variants": [{"color": v.color, "size": v.size, "stock": v.stock} for v in variants],
                }
            )

    def search_products(self, query: str, limit: int) -> ProductSearch:
        """Products whose names, brand or category contain most of the query's words (Chinese: its character pairs)."""
        wanted = _search_units(query)
        if not wanted:
            raise Invalid("invalid_request", "Give a product name, brand or category to search for.")
        scored: list[tuple[float, str, ProductMatch]] = []
        with self.ctx.sessions() as session:
            stock: dict[str, int] = {}
            for variant in session.scalars(select(Variant)).all():
                stock[variant.sku] = stock.get(variant.sku, 0) + variant.stock
            for product in session.scalars(select(Product)).all():
                doc = product.doc
                category = self.ctx.shop.categories.get(product.category)
                words = [doc["name_zh"], doc["name_en"], doc["brand"], product.sku, product.category]
                if category is not None:
                    words += [category.zh, category.en]
                haystack = _fold(" ".join(words))
                score = sum(1 for unit in wanted if unit in haystack) / len(wanted)
                if score >= _SEARCH_MIN_SCORE:
                    match = ProductMatch.model_validate({**doc, "sku": product.sku, "stock": stock.get(product.sku, 0)})
                    scored.append((score, product.sku, match))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return ProductSearch(query=query, products=[match for _, _, match in scored[:limit]])

    def get_refund(self, order_id: str) -> RefundStatus:
        with self.ctx.sessions() as session:
            doc = load_order(session, order_id).doc
        after_sale = doc.get("after_sale")
        received = parse_time(after_sale.get("return_received_at")) if after_sale else None
        expected = None
        if received is not None and not doc.get("refund") and after_sale and after_sale["type"] == "return":
            expected = received + timedelta(hours=self.ctx.shop.policies.returns.refund_after_receipt_hours)
        label = self.ctx.shop.status_label(doc["status"])
        return RefundStatus.model_validate(
            {
                "order_id": doc["order_id"],
                "status": doc["status"],
                "status_zh": label.zh,
                "status_en": label.en,
                "refund": doc.get("refund"),
                "after_sale": after_sale,
                "expected_by": expected,
            }
        )

    def list_writes(self, order_id: str | None) -> WriteList:
        with self.ctx.sessions() as session:
            query = select(Write).order_by(Write.id)
            if order_id:
                query = query.where(Write.order_id == order_key(order_id))
            rows = session.scalars(query).all()
            return WriteList(writes=[WriteRecord.model_validate(row, from_attributes=True) for row in rows])


_SEARCH_MIN_SCORE = 0.6
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_WORD = re.compile(r"[a-z0-9][a-z0-9+.\-]*")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _search_units(query: str) -> list[str]:
    """What a product must contain to match: English words and numbers, and pairs of Chinese characters."""
    text = _fold(query)
    units = _WORD.findall(text)
    for run in _CJK_RUN.findall(text):
        units += [run] if len(run) < 3 else [run[i : i + 2] for i in range(len(run) - 1)]
    return list(dict.fromkeys(units))


def _load_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id.strip().upper())
    if user is None:
        raise NotFound("user_not_found", f"There is no user {user_id!r}; user ids look like U10048.")
    return user


def _shipment(row: Shipment) -> ShipmentOut:
    events = row.doc.get("events") or []
    return ShipmentOut.model_validate({**row.doc, "latest": events[-1] if events else None})


def normalize_phone(text: str) -> str:
    digits = "".join(ch for ch in text if ch.isdigit())
    return digits[2:] if len(digits) == 13 and digits.startswith("86") else digits


def mask_phone(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}" if len(phone) >= 8 else "****"


def mask_email(email: str) -> str | None:
    local, at, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if at and local else None


def mask_name(name: str) -> str:
    """欧阳倩 → 欧*倩, 王磊 → 王*, Tom Becker → T** B*****."""
    if " " in name.strip():
        return " ".join(word[:1] + "*" * (len(word) - 1) for word in name.split())
    if len(name) <= 2:
        return name[:1] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]
