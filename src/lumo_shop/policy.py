"""shop.yaml's after-sales, cancellation and invoice rules applied to one order at one moment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from lumo_shop.dataset import ShopConfig
from lumo_shop.errors import Conflict, Invalid
from lumo_shop.schemas import InvoiceRequest, OrderPolicy, ReturnLine

BEFORE_SHIPMENT = frozenset({"pending_payment", "paid", "processing"})
IN_DELIVERY = frozenset({"shipped", "in_transit", "out_for_delivery"})
AFTER_SALE_READY = frozenset({"delivered", "completed"})
NO_INVOICE_STATUSES = frozenset({"pending_payment", "cancelled", "refunded"})
QUALITY_REASONS = frozenset({"quality_issue", "wrong_item", "damaged_in_transit"})

_TAX_ID = re.compile(r"^[0-9A-Za-z]{15,20}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Sentences of a catalogue description that restrict no-reason returns (activated phones, opened consumables,
# installed locks): the catalogue marks these items returnable, so the customer's word decides.
_CAVEAT = re.compile(r"no-reason|without a reason|only be returned for quality", re.IGNORECASE)
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class ProductFacts:
    """What the rules need to know about a catalogue product."""

    sku: str
    name_en: str
    category: str
    returnable: bool
    warranty_months: int
    variant_count: int
    caveat: str | None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ProductFacts:
        return cls(
            sku=doc["sku"],
            name_en=doc["name_en"],
            category=doc["category"],
            returnable=bool(doc["returnable"]),
            warranty_months=int(doc["warranty_months"]),
            variant_count=max(1, len(doc["colors"])) * max(1, len(doc["sizes"])),
            caveat=_caveat(doc["description_en"]),
        )

    def label(self) -> str:
        return f"{self.sku} ({self.name_en})"

    def why_not_returnable(self) -> str:
        return "a gift card" if self.category == "gift_cards" else "a personalised (engraved or embroidered) item"


@dataclass(frozen=True, slots=True)
class Windows:
    """The after-sales deadlines of a delivered order; day counts start the day after delivery."""

    delivered_at: datetime
    no_reason_until: datetime
    exchange_until: datetime
    quality_until: datetime
    damage_until: datetime


class Policy:
    """Decides what may be done with one order now, and explains why in plain English."""

    def __init__(
        self, shop: ShopConfig, order: Mapping[str, Any], products: Mapping[str, ProductFacts], now: datetime
    ) -> None:
        self.shop = shop
        self.order = order
        self.products = products
        self.now = now
        self.rules = shop.policies.returns
        self.order_id: str = order["order_id"]
        self.status: str = order["status"]
        delivered = parse_time(order.get("delivered_at"))
        self.windows = self._windows(delivered) if delivered else None

    # ------------------------------------------------------------ the summary shown with the order

    def view(self) -> OrderPolicy:
        w = self.windows
        ready = self._ready_for_after_sale()
        items = [self._product(i["sku"]) for i in self.order["items"]]
        non_returnable = [p.sku for p in items if not p.returnable]
        swappable = [p for p in items if p.returnable and p.variant_count > 1]
        return OrderPolicy(
            delivered_days_ago=(self._local(self.now).date() - self._local(w.delivered_at).date()).days if w else None,
            no_reason_return_until=w.no_reason_until if w else None,
            quality_return_until=w.quality_until if w else None,
            returnable_no_reason=bool(
                w and ready and self.now <= w.no_reason_until and len(non_returnable) < len(items)
            ),
            returnable_quality=bool(w and ready and self.now <= w.quality_until),
            exchangeable=bool(w and ready and self.now <= w.quality_until),
            exchangeable_size_color=bool(w and ready and self.now <= w.exchange_until and swappable),
            cancellable=self.status in BEFORE_SHIPMENT,
            address_changeable=self.status in BEFORE_SHIPMENT,
            non_returnable_items=non_returnable,
            reasons=self._reasons(items),
        )

    def _reasons(self, items: list[ProductFacts]) -> list[str]:
        label = self.shop.status_label(self.status).en
        w = self.windows
        out: list[str] = []
        if w is None:
            if self.status in BEFORE_SHIPMENT:
                out.append(f"Not shipped yet ({label}): it can still be cancelled and its address changed.")
            elif self.status in IN_DELIVERY:
                out.append(
                    f"On its way ({label}): too late to cancel or change the address; "
                    "the customer may refuse the parcel or return it after delivery."
                )
            else:
                out.append(f"The order is {label.lower()} and was never delivered: nothing can be returned.")
            return out
        out.append(f"Delivered on {_day(w.delivered_at)}.")
        after_sale = self.order.get("after_sale")
        if after_sale:
            out.append(
                f"After-sales request {after_sale['id']} ({after_sale['type']}, {after_sale['status']}) exists: "
                "no further return or exchange on this order."
            )
        elif self.status not in AFTER_SALE_READY:
            out.append(f"The order is {label.lower()}: no return or exchange can be started.")
        else:
            if self.now <= w.no_reason_until and all(not p.returnable for p in items):
                out.append(
                    f"The no-reason window runs until {_stamp(w.no_reason_until)}, but no item of this order can be "
                    "returned or swapped without a reason."
                )
            elif self.now <= w.no_reason_until:
                out.append(f"No-reason return or colour/size exchange possible until {_stamp(w.no_reason_until)}.")
            else:
                out.append(f"The 7-day no-reason window closed at {_stamp(w.no_reason_until)}.")
            if self.now <= w.quality_until:
                out.append(f"Quality-issue return or exchange possible until {_stamp(w.quality_until)}.")
            else:
                months = max((p.warranty_months for p in items), default=0)
                out.append(
                    f"The quality window closed at {_stamp(w.quality_until)}; faults fall under the warranty "
                    f"({months} months from delivery)."
                )
            if self.now <= w.damage_until:
                out.append(f"Transport damage can be reported until {_stamp(w.damage_until)}.")
        for p in items:
            if not p.returnable:
                out.append(
                    f"{p.label()} is {p.why_not_returnable()}: never returnable without a reason; "
                    "quality issues are still covered."
                )
            elif p.caveat:
                out.append(f"{p.label()}: {p.caveat}")
        return out

    # ------------------------------------------------------------ checks before a write

    def check_cancel(self) -> None:
        if self.status not in BEFORE_SHIPMENT:
            label = self.shop.status_label(self.status).en
            hint = (
                " Once shipped, the customer can refuse the parcel or return it after delivery."
                if self.status in IN_DELIVERY
                else ""
            )
            raise Conflict(
                "not_cancellable",
                f"Order {self.order_id} is {self.status} ({label}); only orders awaiting payment, paid or "
                f"processing can be cancelled.{hint}",
                {"status": self.status},
            )

    def check_address(self) -> None:
        if self.status in BEFORE_SHIPMENT:
            return
        label = self.shop.status_label(self.status).en
        if self.status == "cancelled":
            raise Conflict("order_cancelled", f"Order {self.order_id} is cancelled; its address cannot change.")
        raise Conflict(
            "already_shipped",
            f"Order {self.order_id} is {self.status} ({label}): the address can only be changed before shipment.",
            {"status": self.status},
        )

    def check_return(self, reason_code: str, lines: dict[int, int]) -> None:
        """Raise unless a return of `lines` (item index → quantity) for `reason_code` is allowed now."""
        w = self._after_sale_windows()
        if reason_code == "no_reason":
            if self.now > w.no_reason_until:
                later = (
                    f" A quality issue can still be reported until {_stamp(w.quality_until)}."
                    if self.now <= w.quality_until
                    else " Faults are now covered by the warranty."
                )
                self._outside("The 7-day no-reason return window", w.no_reason_until, later)
            blocked = [self._product(self.order["items"][i]["sku"]) for i in lines]
            blocked = [p for p in blocked if not p.returnable]
            if blocked:
                what = "; ".join(f"{p.label()} is {p.why_not_returnable()}" for p in blocked)
                raise Conflict(
                    "not_returnable",
                    f"Not returnable without a reason: {what}. Quality issues are still covered "
                    f"(return or exchange until {_stamp(w.quality_until)}).",
                    {"items": [p.sku for p in blocked]},
                )
        elif reason_code == "damaged_in_transit":
            if self.now > w.damage_until:
                self._outside(
                    f"Transport damage must be reported within {self.rules.damage_report_hours} hours of delivery; "
                    "that window",
                    w.damage_until,
                    " A fault can still be reported as a quality issue"
                    + (f" until {_stamp(w.quality_until)}." if self.now <= w.quality_until else " under warranty."),
                )
        elif self.now > w.quality_until:
            self._outside(
                f"The {self.rules.quality_days}-day quality window", w.quality_until, " Faults fall under the warranty."
            )

    def check_exchange(self, reason_code: str, product: ProductFacts) -> None:
        w = self._after_sale_windows()
        if reason_code == "size_color":
            if not product.returnable:
                raise Conflict(
                    "not_exchangeable",
                    f"{product.label()} is {product.why_not_returnable()}: it can only be exchanged for a "
                    "quality issue, not for another colour or size.",
                    {"items": [product.sku]},
                )
            if self.now > w.exchange_until:
                later = (
                    f" A faulty item can still be exchanged until {_stamp(w.quality_until)}."
                    if self.now <= w.quality_until
                    else ""
                )
                self._outside("The 7-day colour/size exchange window", w.exchange_until, later)
        elif self.now > w.quality_until:
            self._outside(
                f"The {self.rules.quality_days}-day quality window", w.quality_until, " Faults fall under the warranty."
            )

    def check_invoice(self, request: InvoiceRequest) -> None:
        if self.status in NO_INVOICE_STATUSES:
            label = self.shop.status_label(self.status).en
            raise Conflict(
                "invoice_not_allowed",
                f"Order {self.order_id} is {self.status} ({label}); invoices are issued only for paid orders "
                "that are not cancelled or fully refunded.",
                {"status": self.status},
            )
        existing = self.order.get("invoice")
        if existing and existing.get("status") != "cancelled":
            number = f", no. {existing['invoice_no']}" if existing.get("invoice_no") else ""
            raise Conflict(
                "invoice_exists",
                f"Order {self.order_id} already has an invoice ({existing['type']}, {existing['status']}{number}); "
                "one invoice per order.",
                {"invoice_status": existing.get("status")},
            )
        if request.title_type == "company" and not (request.tax_id and _TAX_ID.match(request.tax_id)):
            raise Invalid(
                "invalid_tax_id",
                "A company invoice needs the taxpayer id (unified social credit code): 15-20 letters or digits.",
            )
        if request.email is not None and not _EMAIL.match(request.email):
            raise Invalid("invalid_email", f"{request.email!r} is not an email address.")
        invoices = self.shop.policies.invoices
        if request.type == "vat_special":
            if request.title_type != "company":
                raise Invalid("vat_special_requires_company", "Special VAT invoices are issued to companies only.")
            w = self.windows
            if w is not None:
                deadline = self._end_of_day(w.delivered_at, invoices.vat_special_request_days_after_delivery)
                if self.now > deadline:
                    raise Conflict(
                        "outside_invoice_window",
                        f"Special VAT invoices must be requested within "
                        f"{invoices.vat_special_request_days_after_delivery} days after delivery (until "
                        f"{_stamp(deadline)}); an electronic normal invoice is still possible.",
                        {"deadline": deadline.isoformat()},
                    )
        completed = parse_time(self.order.get("completed_at"))
        if request.type == "e_normal" and completed is not None:
            deadline = self._end_of_day(completed, invoices.e_normal_request_days_after_completion)
            if self.now > deadline:
                raise Conflict(
                    "outside_invoice_window",
                    f"Invoices can be requested up to {invoices.e_normal_request_days_after_completion} days "
                    f"after the order completed (until {_stamp(deadline)}).",
                    {"deadline": deadline.isoformat()},
                )

    # ------------------------------------------------------------ money and lines

    def resolve_lines(self, requested: list[ReturnLine] | None) -> dict[int, int]:
        """Map requested (sku, qty) to order item index → quantity; None means every item in full."""
        items = self.order["items"]
        if requested is None:
            return {i: int(item["qty"]) for i, item in enumerate(items)}
        index = {item["sku"]: i for i, item in enumerate(items)}
        lines: dict[int, int] = {}
        for line in requested:
            sku = line.sku.strip().upper()
            if sku not in index:
                raise Invalid(
                    "item_not_in_order",
                    f"{line.sku} is not in order {self.order_id}; its items are {', '.join(index)}.",
                    {"items": list(index)},
                )
            i = index[sku]
            if i in lines:
                raise Invalid("duplicate_item", f"{sku} is listed twice; give each item once with its quantity.")
            ordered = int(items[i]["qty"])
            qty = line.qty if line.qty is not None else ordered
            if qty > ordered:
                raise Invalid("invalid_quantity", f"Order {self.order_id} has only {ordered} × {sku}.")
            lines[i] = qty
        return lines

    def refund_amount(self, lines: dict[int, int], *, include_shipping: bool) -> float:
        """Paid amount of the lines: price minus their pro-rata coupon share; shipping if the seller is at fault
        and the whole order comes back."""
        items = self.order["items"]
        shares = _discount_shares(self.order)
        amount = Decimal("0")
        for i, qty in lines.items():
            ordered = int(items[i]["qty"])
            amount += _money(items[i]["unit_price"]) * qty - shares[i] * qty / ordered
        whole = all(lines.get(i) == int(item["qty"]) for i, item in enumerate(items))
        if include_shipping and whole:
            amount += _money(self.order["shipping_fee"])
        return float(amount.quantize(_CENT, ROUND_HALF_UP))

    def ship_back_by(self, approved_at: datetime) -> datetime:
        return approved_at + timedelta(days=self.rules.return_ship_back_days)

    # ------------------------------------------------------------ helpers

    def _ready_for_after_sale(self) -> bool:
        return self.status in AFTER_SALE_READY and not self.order.get("after_sale")

    def _after_sale_windows(self) -> Windows:
        after_sale = self.order.get("after_sale")
        if after_sale:
            raise Conflict(
                "after_sale_exists",
                f"Order {self.order_id} already has after-sales request {after_sale['id']} "
                f"({after_sale['type']}, status {after_sale['status']}); one request per order.",
                {"after_sale_id": after_sale["id"], "after_sale_status": after_sale["status"]},
            )
        if self.status == "cancelled":
            raise Conflict("order_cancelled", f"Order {self.order_id} is cancelled; there is nothing to return.")
        if self.status not in AFTER_SALE_READY or self.windows is None:
            label = self.shop.status_label(self.status).en
            raise Conflict(
                "not_delivered",
                f"Order {self.order_id} is {self.status} ({label}) and not delivered yet; returns and exchanges "
                "open after delivery.",
                {"status": self.status},
            )
        return self.windows

    def _outside(self, what: str, deadline: datetime, later: str) -> None:
        delivered = self.windows.delivered_at if self.windows else None
        since = f" (delivered {_day(delivered)})" if delivered else ""
        raise Conflict(
            "outside_return_window",
            f"{what} for order {self.order_id} ended at {_stamp(deadline)}{since}.{later}",
            {"deadline": deadline.isoformat()},
        )

    def _windows(self, delivered_at: datetime) -> Windows:
        r = self.rules
        return Windows(
            delivered_at=delivered_at,
            no_reason_until=self._end_of_day(delivered_at, r.no_reason_return_days),
            exchange_until=self._end_of_day(delivered_at, r.no_reason_exchange_days),
            quality_until=self._end_of_day(delivered_at, r.quality_days),
            damage_until=delivered_at + timedelta(hours=r.damage_report_hours),
        )

    def _end_of_day(self, start: datetime, days: int) -> datetime:
        """The last second of the `days`-th day after `start`'s date, in the shop's time zone."""
        day: date = self._local(start).date() + timedelta(days=days)
        return datetime.combine(day, time(23, 59, 59), tzinfo=self.shop.tz)

    def _local(self, when: datetime) -> datetime:
        return when.astimezone(self.shop.tz)

    def _product(self, sku: str) -> ProductFacts:
        found = self.products.get(sku)
        if found is None:  # an order line for a product no longer in the catalogue: treat it as an ordinary item
            return ProductFacts(sku, sku, "", True, 12, 1, None)
        return found


def parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _caveat(description_en: str) -> str | None:
    for sentence in re.split(r"(?<=[.;])\s+", description_en):
        if _CAVEAT.search(sentence):
            text = sentence.rstrip(";.").strip()
            return text[:1].upper() + text[1:] + "."
    return None


def _money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(_CENT)


def _discount_shares(order: Mapping[str, Any]) -> list[Decimal]:
    """Each line's share of the coupon discount, pro rata to its amount; the last line absorbs rounding."""
    items = order["items"]
    discount, subtotal = _money(order["discount"]), _money(order["subtotal"])
    shares: list[Decimal] = []
    for i, item in enumerate(items):
        if i == len(items) - 1:
            shares.append(discount - sum(shares, Decimal("0")))
        elif subtotal:
            line = _money(item["unit_price"]) * int(item["qty"])
            shares.append((discount * line / subtotal).quantize(_CENT, ROUND_HALF_UP))
        else:
            shares.append(Decimal("0"))
    return shares


def _day(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d") if when else "?"


def _stamp(when: datetime) -> str:
    return when.isoformat(sep=" ", timespec="minutes")
