"""The HTTP API's request and response bodies; they are what /openapi.json publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CancelReasonCode = Literal["changed_mind", "duplicate_order", "wrong_address", "wrong_variant", "other"]
ReturnReasonCode = Literal["no_reason", "quality_issue", "damaged_in_transit", "wrong_item"]
ExchangeReasonCode = Literal["size_color", "quality_issue"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- errors and service


class ErrorInfo(Response):
    code: str = Field(examples=["order_not_found"])
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(Response):
    """Every error: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorInfo


class Health(Response):
    status: Literal["ok"] = "ok"


class ClockOut(Response):
    now: datetime


# ---------------------------------------------------------------- identity and users


class VerifyRequest(Request):
    """Who claims to be the customer: an order id or a user id, and a phone number or its last 4 digits."""

    order_id: str | None = None
    user_id: str | None = None
    phone: str = Field(min_length=4, max_length=20, examples=["0827", "13156780827"])


class VerifyResult(Response):
    verified: bool
    user_id: str | None = None
    name_masked: str | None = None
    reason: Literal["mismatch", "order_not_found", "user_not_found"] | None = None


class UserOut(Response):
    user_id: str
    name: str
    member_tier: str
    preferred_lang: str
    phone_masked: str = Field(examples=["158****3261"])
    email_masked: str | None
    points_balance: int


# ---------------------------------------------------------------- orders


class Text(Response):
    zh: str
    en: str


class Reason(Response):
    code: str
    zh: str
    en: str


class OrderItem(Response):
    sku: str
    name_zh: str
    name_en: str
    qty: int
    unit_price: float
    color: str | None
    size: str | None


class ItemName(Response):
    sku: str
    name_zh: str
    name_en: str
    qty: int


class OrderSummary(Response):
    order_id: str
    status: str
    status_zh: str
    status_en: str
    created_at: datetime
    total: float
    items: list[ItemName]


class OrderList(Response):
    orders: list[OrderSummary]


class Address(Response):
    recipient: str
    phone: str
    province: str
    province_en: str | None = None
    city: str
    city_en: str | None = None
    district: str | None = None
    district_en: str | None = None
    street: str


class Refund(Response):
    amount: float
    refunded_at: datetime | None
    channel: str | None


class AfterSaleItem(Response):
    sku: str
    qty: int
    color: str | None
    size: str | None


class AfterSale(Response):
    id: str = Field(examples=["AS261120001"])
    type: str = Field(description="return, exchange or refund_only")
    status: str = Field(
        description="pending_review, approved_awaiting_return, return_in_transit, received_inspecting, "
        "replacement_shipped, refunded or completed"
    )
    reason: Reason
    detail: Text | None
    requested_at: datetime
    approved_at: datetime | None
    items: list[AfterSaleItem]
    refund_amount: float | None
    return_carrier: str | None
    return_tracking_number: str | None
    return_received_at: datetime | None
    replacement_items: list[AfterSaleItem] | None
    replacement_carrier: str | None
    replacement_tracking_number: str | None
    replacement_shipped_at: datetime | None
    replacement_delivered_at: datetime | None


class Invoice(Response):
    type: str
    title_type: str
    title: str
    tax_id: str | None
    status: str = Field(description="pending, issued, reversed, reissued or cancelled")
    requested_at: datetime | None
    issued_at: datetime | None
    invoice_no: str | None
    email: str | None = None


class OrderPolicy(Response):
    """What the shop's rules allow for this order right now (per the service clock)."""

    delivered_days_ago: int | None
    no_reason_return_until: datetime | None
    quality_return_until: datetime | None
    returnable_no_reason: bool
    returnable_quality: bool
    exchangeable: bool = Field(description="Some exchange is possible (a quality exchange at least)")
    exchangeable_size_color: bool = Field(description="A colour/size exchange without a reason is possible")
    cancellable: bool
    address_changeable: bool
    non_returnable_items: list[str] = Field(description="SKUs that can never be returned without a reason")
    reasons: list[str] = Field(description="Why, in plain English, one line per fact")


class OrderOut(Response):
    order_id: str
    user_id: str
    status: str
    status_zh: str
    status_en: str
    created_at: datetime
    payment_expires_at: datetime | None
    paid_at: datetime | None
    items: list[OrderItem]
    subtotal: float
    discount: float
    coupon_code: str | None
    shipping_fee: float
    total: float
    payment_method: str | None
    installments: int | None
    address: Address
    carrier: str | None
    tracking_number: str | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: Reason | None
    refund: Refund | None
    after_sale: AfterSale | None
    invoice: Invoice | None
    buyer_note: str | None
    policy: OrderPolicy


class RefundStatus(Response):
    order_id: str
    status: str
    status_zh: str
    status_en: str
    refund: Refund | None
    after_sale: AfterSale | None
    expected_by: datetime | None = Field(description="When the refund should start, for a received return")


# ---------------------------------------------------------------- logistics and products


class TrackingEvent(Response):
    time: datetime
    status: str
    location_zh: str
    location_en: str
    description_zh: str
    description_en: str


class ShipmentOut(Response):
    tracking_number: str
    carrier: str
    carrier_name_zh: str
    carrier_name_en: str
    order_id: str
    direction: str = Field(description="outbound, return or exchange_outbound")
    events: list[TrackingEvent]
    latest: TrackingEvent | None


class ShipmentList(Response):
    order_id: str
    shipments: list[ShipmentOut]


class VariantOut(Response):
    color: str | None
    size: str | None
    stock: int


class ProductOut(Response):
    sku: str
    name_zh: str
    name_en: str
    category: str
    category_zh: str
    category_en: str
    brand: str
    price: float
    colors: list[str]
    sizes: list[str]
    stock: int = Field(description="Sum of the variants' stock")
    specs: dict[str, Any]
    warranty_months: int
    returnable: bool
    description_zh: str
    description_en: str
    variants: list[VariantOut]


class ProductMatch(Response):
    sku: str
    name_zh: str
    name_en: str
    brand: str
    price: float
    colors: list[str]
    sizes: list[str]
    stock: int = Field(description="Sum of the variants' stock; GET /products/{sku} has each variant's")


class ProductSearch(Response):
    query: str
    products: list[ProductMatch] = Field(description="Best matches first; empty when nothing matches")


# ---------------------------------------------------------------- writes


class CancelRequest(Request):
    reason_code: CancelReasonCode | None = Field(default=None, examples=["changed_mind"])


class ReturnLine(Request):
    sku: str
    qty: int | None = Field(default=None, ge=1, description="Defaults to the whole quantity ordered")


class ReturnRequest(Request):
    reason_code: ReturnReasonCode
    detail: str | None = Field(default=None, max_length=500)
    items: list[ReturnLine] | None = Field(default=None, min_length=1, description="null: every item")


class ExchangeRequest(Request):
    sku: str
    color: str | None = Field(default=None, description="Full `中文/English` text or either half; null: keep")
    size: str | None = Field(default=None, description="Like color; null: keep")
    reason_code: ExchangeReasonCode
    detail: str | None = Field(default=None, max_length=500)


class AddressRequest(Request):
    recipient: str | None = Field(default=None, min_length=1, max_length=50)
    phone: str | None = Field(default=None, min_length=11, max_length=20)
    province: str = Field(min_length=1, max_length=30)
    city: str = Field(min_length=1, max_length=30)
    district: str | None = Field(default=None, max_length=30)
    street: str = Field(min_length=1, max_length=200)


class InvoiceRequest(Request):
    type: Literal["e_normal", "vat_special"]
    title_type: Literal["personal", "company"]
    title: str = Field(min_length=1, max_length=100)
    tax_id: str | None = None
    email: str | None = Field(default=None, max_length=200)


class ReturnAddressOut(Response):
    recipient: str
    phone: str
    address_zh: str
    address_en: str
    postal_code: str
    note_zh: str
    note_en: str


class AfterSaleCreated(AfterSale):
    """A new return or exchange, with where and by when to send the item back."""

    order_id: str
    order_status: str
    return_address: ReturnAddressOut
    return_postage: Literal["buyer", "lumo"] = Field(description="Who pays for sending the item back")
    ship_back_by: datetime | None = Field(description="null while the request awaits review")


class InvoiceCreated(Invoice):
    order_id: str


class WriteRecord(Response):
    id: int
    operation: str
    order_id: str
    idempotency_key: str
    request: dict[str, Any]
    response: dict[str, Any]
    status_code: int
    created_at: datetime


class WriteList(Response):
    writes: list[WriteRecord]


class ResetResult(Response):
    """The database was emptied and loaded from the dataset again."""

    status: Literal["reset"] = "reset"
    orders: int
    """Orders loaded."""
