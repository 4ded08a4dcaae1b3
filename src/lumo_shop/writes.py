"""The write side of the shop: cancellations, returns, exchanges, address changes and invoice requests."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lumo_shop.db import Order, Product, ReasonLabel, User, Variant
from lumo_shop.errors import Conflict, Invalid
from lumo_shop.idempotency import WriteLog, WriteOutcome
from lumo_shop.policy import QUALITY_REASONS
from lumo_shop.regions import PROVINCE_EN, served_province
from lumo_shop.schemas import (
    AddressRequest,
    AfterSaleCreated,
    CancelRequest,
    ExchangeRequest,
    InvoiceCreated,
    InvoiceRequest,
    ReturnAddressOut,
    ReturnRequest,
)
from lumo_shop.variants import match_option
from lumo_shop.views import ShopContext, iso, load_order, order_key, order_out, policy_for, save_order

_FALLBACK_LABELS = {"other": ("其他原因", "Other reason")}
"""Labels for reason codes the dataset never uses (the rest come from the dataset's own orders)."""


class ShopWrites:
    """Performs each write once per Idempotency-Key, after the order's policy allows it."""

    def __init__(self, ctx: ShopContext, log: WriteLog) -> None:
        self.ctx = ctx
        self.log = log

    def cancel(self, order_id: str, request: CancelRequest, key: str | None) -> WriteOutcome:
        def action(session: Session) -> tuple[int, dict[str, Any]]:
            row = load_order(session, order_id)
            policy_for(self.ctx, session, row.doc).check_cancel()
            now = iso(self.ctx.clock.now())
            doc = copy.deepcopy(row.doc)
            doc.update(
                status="cancelled",
                cancelled_at=now,
                payment_expires_at=None,
                cancel_reason=_reason(session, "cancel", request.reason_code or "other"),
            )
            if doc.get("paid_at"):
                doc["refund"] = {"amount": doc["total"], "refunded_at": now, "channel": doc["payment_method"]}
            if doc.get("invoice") and doc["invoice"]["status"] == "pending":
                doc["invoice"]["status"] = "cancelled"
            save_order(row, doc)
            return 200, order_out(self.ctx, session, doc).model_dump(mode="json")

        return self.log.run("cancelOrder", order_key(order_id), key, request.model_dump(mode="json"), action)

    def create_return(self, order_id: str, request: ReturnRequest, key: str | None) -> WriteOutcome:
        def action(session: Session) -> tuple[int, dict[str, Any]]:
            row = load_order(session, order_id)
            policy = policy_for(self.ctx, session, row.doc)
            lines = policy.resolve_lines(request.items)
            policy.check_return(request.reason_code, lines)
            items = row.doc["items"]
            seller_at_fault = request.reason_code in QUALITY_REASONS
            after_sale = self._after_sale(
                session,
                kind="return",
                reason_code=request.reason_code,
                detail=request.detail,
                reviewed=seller_at_fault,
                items=[_line(items[i], qty) for i, qty in lines.items()],
            )
            after_sale["refund_amount"] = policy.refund_amount(lines, include_shipping=seller_at_fault)
            return 201, self._open_after_sale(session, row, after_sale, "return_requested", seller_at_fault)

        return self.log.run("createReturn", order_key(order_id), key, request.model_dump(mode="json"), action)

    def create_exchange(self, order_id: str, request: ExchangeRequest, key: str | None) -> WriteOutcome:
        def action(session: Session) -> tuple[int, dict[str, Any]]:
            row = load_order(session, order_id)
            policy = policy_for(self.ctx, session, row.doc)
            sku = request.sku.strip().upper()
            item = next((i for i in row.doc["items"] if i["sku"] == sku), None)
            if item is None:
                skus = [i["sku"] for i in row.doc["items"]]
                raise Invalid(
                    "item_not_in_order",
                    f"{request.sku} is not in order {row.order_id}; its items are {', '.join(skus)}.",
                    {"items": skus},
                )
            product = session.get(Product, sku)
            facts = policy.products.get(sku)
            if product is None or facts is None:
                raise Conflict("not_exchangeable", f"{sku} is no longer in the catalogue and cannot be exchanged.")
            policy.check_exchange(request.reason_code, facts)
            variant = _pick_variant(session, product, item, request)
            if variant.stock < int(item["qty"]):
                _raise_out_of_stock(session, product, variant)
            variant.stock -= int(item["qty"])
            quality = request.reason_code == "quality_issue"
            reason = (
                "quality_issue"
                if quality
                else ("size_not_fit" if variant.size != item["size"] else "no_reason_exchange")
            )
            after_sale = self._after_sale(
                session,
                kind="exchange",
                reason_code=reason,
                detail=request.detail,
                reviewed=quality,
                items=[_line(item, int(item["qty"]))],
            )
            after_sale["replacement_items"] = [
                {"sku": sku, "qty": int(item["qty"]), "color": variant.color, "size": variant.size}
            ]
            return 201, self._open_after_sale(session, row, after_sale, "exchange_requested", quality)

        return self.log.run("createExchange", order_key(order_id), key, request.model_dump(mode="json"), action)

    def change_address(self, order_id: str, request: AddressRequest, key: str | None) -> WriteOutcome:
        def action(session: Session) -> tuple[int, dict[str, Any]]:
            row = load_order(session, order_id)
            policy_for(self.ctx, session, row.doc).check_address()
            zones = self.ctx.shop.policies.shipping.zones.values()
            province = served_province(request.province, (p for zone in zones for p in zone.provinces))
            if province is None:
                *others, last = self.ctx.shop.policies.shipping.regions_not_served or ["overseas"]
                not_served = f"{', '.join(others)} or {last}" if others else last
                raise Invalid(
                    "region_not_served",
                    f"Lumo delivers only within mainland China (not to {not_served}); "
                    f"{request.province!r} is not a mainland province we ship to.",
                )
            phone = request.phone
            if phone is not None:
                phone = "".join(ch for ch in phone if ch.isdigit())
                if len(phone) != 11 or not phone.startswith("1"):
                    raise Invalid("invalid_phone", "The recipient's phone must be an 11-digit mainland mobile number.")
            doc = copy.deepcopy(row.doc)
            old = doc["address"]
            city, district = request.city.strip(), (request.district or "").strip() or None
            doc["address"] = {
                "recipient": (request.recipient or old["recipient"]).strip(),
                "phone": phone or old["phone"],
                "province": province,
                "province_en": PROVINCE_EN[province],
                "city": city,
                "city_en": old.get("city_en") if city == old.get("city") else None,
                "district": district,
                "district_en": old.get("district_en") if district == old.get("district") else None,
                "street": request.street.strip(),
            }
            save_order(row, doc)
            return 200, order_out(self.ctx, session, doc).model_dump(mode="json")

        return self.log.run("changeAddress", order_key(order_id), key, request.model_dump(mode="json"), action)

    def request_invoice(self, order_id: str, request: InvoiceRequest, key: str | None) -> WriteOutcome:
        def action(session: Session) -> tuple[int, dict[str, Any]]:
            row = load_order(session, order_id)
            policy_for(self.ctx, session, row.doc).check_invoice(request)
            user = session.get(User, row.user_id)
            company = request.title_type == "company"
            invoice = {
                "type": request.type,
                "title_type": request.title_type,
                "title": request.title.strip(),
                "tax_id": request.tax_id.upper() if company and request.tax_id else None,
                "status": "pending",
                "requested_at": iso(self.ctx.clock.now()),
                "issued_at": None,
                "invoice_no": None,
                "email": request.email or (user.doc.get("email") if user else None),
            }
            doc = copy.deepcopy(row.doc)
            doc["invoice"] = invoice
            save_order(row, doc)
            return 201, InvoiceCreated.model_validate({**invoice, "order_id": row.order_id}).model_dump(mode="json")

        return self.log.run("requestInvoice", order_key(order_id), key, request.model_dump(mode="json"), action)

    # ------------------------------------------------------------ helpers

    def _after_sale(
        self,
        session: Session,
        *,
        kind: str,
        reason_code: str,
        detail: str | None,
        reviewed: bool,
        items: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """A new after-sales record in the dataset's shape; no-reason cases are approved at once."""
        now = self.ctx.clock.now()
        text = (detail or "").strip()
        return {
            "id": _next_after_sale_id(session, now.strftime("%y%m%d")),
            "type": kind,
            "status": "pending_review" if reviewed else "approved_awaiting_return",
            "reason": _reason(session, "after_sale", reason_code),
            "detail": {"zh": text, "en": text} if text else None,  # the customer's own words, in whichever language
            "requested_at": iso(now),
            "approved_at": None if reviewed else iso(now),
            "items": items,
            "refund_amount": None,
            "return_carrier": None,
            "return_tracking_number": None,
            "return_received_at": None,
            "replacement_items": None,
            "replacement_carrier": None,
            "replacement_tracking_number": None,
            "replacement_shipped_at": None,
            "replacement_delivered_at": None,
        }

    def _open_after_sale(
        self, session: Session, row: Order, after_sale: dict[str, Any], status: str, seller_pays: bool
    ) -> dict[str, Any]:
        doc = copy.deepcopy(row.doc)
        doc["after_sale"] = after_sale
        doc["status"] = status
        save_order(row, doc)
        user = session.get(User, row.user_id)
        platinum = bool(user and user.doc.get("member_tier") == "platinum")
        address = self.ctx.shop.warehouse.return_address
        now = self.ctx.clock.now()
        policy = policy_for(self.ctx, session, doc)
        created = AfterSaleCreated.model_validate(
            {
                **after_sale,
                "order_id": row.order_id,
                "order_status": status,
                "return_address": ReturnAddressOut(
                    recipient=address.recipient,
                    phone=address.phone,
                    address_zh=address.zh,
                    address_en=address.en,
                    postal_code=address.postal_code,
                    note_zh=address.note.zh,
                    note_en=address.note.en,
                ),
                "return_postage": "lumo" if seller_pays or platinum else "buyer",
                "ship_back_by": None if after_sale["approved_at"] is None else policy.ship_back_by(now),
            }
        )
        return created.model_dump(mode="json")


def _pick_variant(session: Session, product: Product, item: dict[str, Any], request: ExchangeRequest) -> Variant:
    """The stocked variant the customer asks for; unnamed options stay as ordered."""
    variants = list(session.scalars(select(Variant).where(Variant.sku == product.sku).order_by(Variant.id)))
    wanted_color, wanted_size = (request.color or "").strip() or None, (request.size or "").strip() or None
    color = match_option(wanted_color, product.doc["colors"]) if wanted_color else item["color"]
    size = match_option(wanted_size, product.doc["sizes"]) if wanted_size else item["size"]
    variant = next((v for v in variants if (v.color, v.size) == (color, size)), None)
    if (wanted_color and color is None) or (wanted_size and size is None) or variant is None:
        asked = " / ".join(x for x in (wanted_color, wanted_size) if x) or "the ordered variant"
        raise Invalid(
            "unknown_variant",
            f"{product.sku} has no variant {asked!r}. Available: {_describe(variants)}.",
            {"variants": [_variant_json(v) for v in variants]},
        )
    same = (variant.color, variant.size) == (item["color"], item["size"])
    if request.reason_code == "size_color" and same:
        raise Invalid(
            "unchanged_variant",
            f"{_name(variant)} is the variant already ordered; say which colour or size the customer wants instead.",
        )
    if request.reason_code == "quality_issue" and not same:
        raise Invalid(
            "variant_change_not_allowed",
            "A quality exchange replaces the item with the same colour and size; for another colour or size use "
            "reason_code size_color (within 7 days of delivery).",
        )
    return variant


def _raise_out_of_stock(session: Session, product: Product, variant: Variant) -> None:
    others = session.scalars(
        select(Variant)
        .where(Variant.sku == product.sku, Variant.stock > 0, Variant.id != variant.id)
        .order_by(Variant.id)
    ).all()
    alternatives = f" In stock: {_describe(others)}." if others else " No other variant is in stock either."
    raise Conflict(
        "out_of_stock",
        f"{product.sku} {_name(variant)} is out of stock.{alternatives} Per policy, a refund replaces an exchange "
        "that cannot be fulfilled.",
        {"in_stock": [_variant_json(v) for v in others]},
    )


def _next_after_sale_id(session: Session, day: str) -> str:
    """AS + YYMMDD of the request + the next free 3-digit sequence of that day."""
    prefix = f"AS{day}"
    taken = session.scalars(select(Order.after_sale_id).where(Order.after_sale_id.like(f"{prefix}%"))).all()
    seq = max((int(i[len(prefix) :]) for i in taken if i and i[len(prefix) :].isdigit()), default=0) + 1
    return f"{prefix}{seq:03d}"


def _reason(session: Session, kind: str, code: str) -> dict[str, str]:
    row = session.get(ReasonLabel, (kind, code))
    if row is not None:
        return {"code": code, "zh": row.zh, "en": row.en}
    zh, en = _FALLBACK_LABELS.get(code, (code, code))
    return {"code": code, "zh": zh, "en": en}


def _line(item: dict[str, Any], qty: int) -> dict[str, Any]:
    return {"sku": item["sku"], "qty": qty, "color": item["color"], "size": item["size"]}


def _name(variant: Variant) -> str:
    return " / ".join(x for x in (variant.color, variant.size) if x) or "(single variant)"


def _describe(variants: Sequence[Variant]) -> str:
    return ", ".join(f"{_name(v)} ({v.stock} in stock)" for v in variants) or "none"


def _variant_json(variant: Variant) -> dict[str, Any]:
    return {"color": variant.color, "size": variant.size, "stock": variant.stock}
