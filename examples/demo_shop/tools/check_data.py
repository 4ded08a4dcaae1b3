#!/usr/bin/env python3
"""Consistency check for the Lumo demo shop dataset.

    .venv/bin/python examples/demo_shop/tools/check_data.py [--root examples/demo_shop]

Checks the catalogue, users, orders, logistics events, fixtures, shop.yaml and the knowledge base
against each other and against the policy numbers in shop.yaml. Every problem is printed as
``path:line: message``; the exit status is 1 if any problem was found, 0 otherwise.
Needs PyYAML (a kefu dependency) to read shop.yaml and fixtures.yaml.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check_data.py needs PyYAML: run it with the project's virtualenv (.venv/bin/python)", file=sys.stderr)
    sys.exit(2)

STATUSES = [
    "pending_payment",
    "paid",
    "processing",
    "shipped",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "completed",
    "cancelled",
    "return_requested",
    "returned",
    "refunded",
    "exchange_requested",
    "exchanged",
]
MIN_PER_STATUS = 5
MIN_ORDERS = 220
ORDER_KEYS = [
    "order_id",
    "user_id",
    "status",
    "created_at",
    "payment_expires_at",
    "paid_at",
    "items",
    "subtotal",
    "discount",
    "coupon_code",
    "shipping_fee",
    "total",
    "payment_method",
    "installments",
    "address",
    "carrier",
    "tracking_number",
    "shipped_at",
    "delivered_at",
    "completed_at",
    "cancelled_at",
    "cancel_reason",
    "refund",
    "after_sale",
    "invoice",
    "buyer_note",
]
PRODUCT_COLS = [
    "sku",
    "name_zh",
    "name_en",
    "category",
    "brand",
    "price",
    "colors",
    "sizes",
    "stock",
    "specs",
    "warranty_months",
    "returnable",
    "description_zh",
    "description_en",
]
USER_COLS = [
    "user_id",
    "name",
    "phone",
    "email",
    "member_tier",
    "preferred_lang",
    "registered_at",
    "birthday",
    "points_balance",
    "province",
    "city",
    "district",
    "street",
    "province_en",
    "city_en",
    "district_en",
]
FAQ_COLS = ["question", "answer", "similar_questions", "category", "tags", "lang"]
FAQ_CATEGORIES = {"returns", "shipping", "payment", "invoice", "membership", "warranty", "privacy", "service"}
KNOWLEDGE_TOPICS = ["returns", "shipping", "payment", "invoices", "membership", "warranty", "privacy"]
# facts every language version of a topic must state (digits compared after removing thousands separators)
KNOWLEDGE_FACTS = {
    "returns": ["7", "15", "48", "24", "400-820-5866"],
    "shipping": ["99", "8", "16:00", "48", "72", "1000", "95338"],
    "payment": ["300", "7.5%", "24", "3", "6", "12"],
    "invoices": ["48", "30", "180", "5"],
    "membership": ["1000", "5000", "15000", "15", "500"],
    "warranty": ["12", "24", "15", "3"],
    "privacy": ["3", "15", "1", "privacy@lumo-shop.example"],
}
EVENT_CODES = {"CREATED", "PICKED_UP", "ARRIVED", "DEPARTED", "OUT_FOR_DELIVERY", "DELIVERED", "EXCEPTION"}
SHIPPED_STATES = {
    "shipped",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "completed",
    "return_requested",
    "returned",
    "refunded",
    "exchange_requested",
    "exchanged",
}
DELIVERED_STATES = {"delivered", "completed", "return_requested", "returned", "exchange_requested", "exchanged"}
AFTER_SALE = {  # order status -> (allowed after_sale types, allowed after_sale statuses)
    "return_requested": ({"return"}, {"pending_review", "approved_awaiting_return", "return_in_transit"}),
    "returned": ({"return"}, {"received_inspecting"}),
    "refunded": ({"return", "refund_only"}, {"refunded"}),
    "exchange_requested": (
        {"exchange"},
        {
            "pending_review",
            "approved_awaiting_return",
            "return_in_transit",
            "received_inspecting",
            "replacement_shipped",
        },
    ),
    "exchanged": ({"exchange"}, {"completed"}),
}
NO_REASON = {"no_reason", "no_reason_exchange", "size_not_fit"}
SELLER_FAULT = {"quality_issue", "wrong_item", "damaged_in_transit"}
CENT = Decimal("0.01")


class Report:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: list[str] = []

    def err(self, path: Path | str, line: int | None, msg: str) -> None:
        p = Path(path)
        rel = p.relative_to(self.root) if p.is_absolute() and p.is_relative_to(self.root) else p
        self.errors.append(f"{rel}:{line if line is not None else 0}: {msg}")


def dt(s: Any) -> datetime | None:
    if s is None:
        return None
    t = datetime.fromisoformat(s)
    if t.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {s}")
    return t


def dec(x: Any) -> Decimal:
    return Decimal(str(x))


def two_dp(x: Any) -> bool:
    return isinstance(x, Decimal) and x == x.quantize(CENT) and x.as_tuple().exponent == -2


# ------------------------------------------------------------------ shop.yaml
def check_shop(r: Report) -> dict[str, Any]:
    path = r.root / "shop.yaml"
    shop = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in (
        "shop",
        "support",
        "order_number_pattern",
        "tracking_number_patterns",
        "policies",
        "coupons",
        "policy_summary",
        "categories",
        "locale",
    ):
        if key not in shop:
            r.err(path, None, f"missing top-level key {key!r}")
    if shop.get("locale", {}).get("currency") != "CNY":
        r.err(path, None, "locale.currency must be CNY")
    for lang in ("zh", "en"):
        text = shop.get("policy_summary", {}).get(lang, "")
        if not text:
            r.err(path, None, f"policy_summary.{lang} is empty")
        elif len(text) > 600:
            r.err(path, None, f"policy_summary.{lang} is {len(text)} characters (max 600)")
        for fact in ("99", "8", "7", "15", "300", "30", "12", "09:00"):
            if fact not in text:
                r.err(path, None, f"policy_summary.{lang} does not mention {fact!r}")
    for name, pat in [
        ("order_number_pattern", shop.get("order_number_pattern")),
        *list(shop.get("tracking_number_patterns", {}).items()),
    ]:
        try:
            re.compile(pat)
        except (re.error, TypeError) as e:
            r.err(path, None, f"{name}: invalid regex: {e}")
    if not re.fullmatch(shop["order_number_pattern"], str(shop.get("order_number_example", ""))):
        r.err(path, None, "order_number_example does not match order_number_pattern")
    zones = shop["policies"]["shipping"]["zones"]
    provs = [p for z in zones.values() for p in z["provinces"]]
    if len(provs) != 31 or len(set(provs)) != 31:
        r.err(path, None, f"shipping zones must list the 31 mainland provinces exactly once (got {len(provs)})")
    codes = [c["code"] for c in shop["coupons"]]
    if len(codes) != len(set(codes)):
        r.err(path, None, "duplicate coupon codes")
    return shop


# ------------------------------------------------------------------ catalogue
def check_products(r: Report, shop: dict[str, Any]) -> dict[str, dict[str, Any]]:
    path = r.root / "catalog" / "products.csv"
    products: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        rd = csv.DictReader(f)
        if rd.fieldnames != PRODUCT_COLS:
            r.err(path, 1, f"header must be {','.join(PRODUCT_COLS)}")
            return products
        for row in rd:
            ln = rd.line_num
            sku = row["sku"]
            if not re.fullmatch(r"LM-[A-Z]{2}-\d{3}", sku):
                r.err(path, ln, f"bad sku {sku!r}")
            if sku in products:
                r.err(path, ln, f"duplicate sku {sku}")
            if row["category"] not in shop["categories"]:
                r.err(path, ln, f"{sku}: unknown category {row['category']!r}")
            if not re.fullmatch(r"\d+\.\d{2}", row["price"]) or Decimal(row["price"]) <= 0:
                r.err(path, ln, f"{sku}: price must be positive with 2 decimals, got {row['price']!r}")
            colors = row["colors"].split("|") if row["colors"] else []
            if not colors or any(c.count("/") != 1 for c in colors):
                r.err(path, ln, f"{sku}: colors must be '|'-separated 'zh/en' pairs")
            sizes = row["sizes"].split("|") if row["sizes"] else []
            if len(sizes) != len(set(sizes)) or len(colors) != len(set(colors)):
                r.err(path, ln, f"{sku}: duplicate colour or size")
            if not row["stock"].isdigit():
                r.err(path, ln, f"{sku}: stock must be a non-negative integer")
            try:
                specs = json.loads(row["specs"])
                if not isinstance(specs, dict) or not specs:
                    raise ValueError("not a non-empty object")
            except ValueError as e:
                r.err(path, ln, f"{sku}: specs is not a JSON object ({e})")
            if not row["warranty_months"].isdigit():
                r.err(path, ln, f"{sku}: warranty_months must be an integer")
            elif int(row["warranty_months"]) not in (0, 12, 24):
                r.err(path, ln, f"{sku}: warranty_months must be 0, 12 or 24 (see knowledge/*/warranty.md)")
            if row["returnable"] not in ("true", "false"):
                r.err(path, ln, f"{sku}: returnable must be true or false")
            custom = "定制" in row["name_zh"]
            if (custom or row["category"] == "gift_cards") and row["returnable"] != "false":
                r.err(path, ln, f"{sku}: customised items and gift cards must have returnable=false")
            if row["returnable"] == "false" and not (custom or row["category"] == "gift_cards"):
                r.err(path, ln, f"{sku}: only customised items and gift cards are non-returnable")
            for col in ("name_zh", "name_en", "brand", "description_zh", "description_en"):
                if not row[col].strip():
                    r.err(path, ln, f"{sku}: empty {col}")
            if re.search(r"[\u4e00-\u9fff]", row["description_en"] + row["name_en"]):
                r.err(path, ln, f"{sku}: Chinese characters in an English field")
            products[sku] = {
                **row,
                "price_d": Decimal(row["price"]),
                "colors_l": colors,
                "sizes_l": sizes,
                "custom": custom,
                "line": ln,
            }
    cats = Counter(p["category"] for p in products.values())
    for c in shop["categories"]:
        if not cats[c]:
            r.err(path, None, f"no products in category {c}")
    if len(products) < 60:
        r.err(path, None, f"only {len(products)} products (need >= 60)")
    return products


# ------------------------------------------------------------------ users
def check_users(r: Report, shop: dict[str, Any]) -> dict[str, dict[str, Any]]:
    path = r.root / "backend" / "users.csv"
    users: dict[str, dict[str, Any]] = {}
    provinces = {p for z in shop["policies"]["shipping"]["zones"].values() for p in z["provinces"]}
    tiers = shop["policies"]["membership"]["tiers"]
    phones: set[str] = set()
    with open(path, encoding="utf-8", newline="") as f:
        rd = csv.DictReader(f)
        if rd.fieldnames != USER_COLS:
            r.err(path, 1, f"header must be {','.join(USER_COLS)}")
            return users
        for row in rd:
            ln = rd.line_num
            uid = row["user_id"]
            if not re.fullmatch(r"U\d{5}", uid) or uid in users:
                r.err(path, ln, f"bad or duplicate user_id {uid!r}")
            if not re.fullmatch(r"1[3-9]\d{9}", row["phone"]) or row["phone"] in phones:
                r.err(path, ln, f"{uid}: bad or duplicate phone {row['phone']!r}")
            phones.add(row["phone"])
            if not re.fullmatch(r"[\w.]+@example\.(com|cn|net)", row["email"]):
                r.err(path, ln, f"{uid}: email must use a reserved example domain")
            if row["member_tier"] not in tiers:
                r.err(path, ln, f"{uid}: unknown member_tier {row['member_tier']!r}")
            if row["preferred_lang"] not in ("zh", "en"):
                r.err(path, ln, f"{uid}: preferred_lang must be zh or en")
            if row["province"] not in provinces:
                r.err(path, ln, f"{uid}: province {row['province']!r} is not in a shipping zone")
            if not re.fullmatch(r"(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", row["birthday"]):
                r.err(path, ln, f"{uid}: birthday must be MM-DD")
            for col in ("name", "city", "district", "street", "province_en", "city_en", "district_en"):
                if not row[col].strip():
                    r.err(path, ln, f"{uid}: empty {col}")
            try:
                reg = dt(row["registered_at"])
            except ValueError as e:
                r.err(path, ln, f"{uid}: registered_at: {e}")
                reg = None
            users[uid] = {**row, "registered": reg, "line": ln}
    if len(users) < 40:
        r.err(path, None, f"only {len(users)} users (need >= 40)")
    return users


# ------------------------------------------------------------------ logistics
def check_logistics(r: Report, shop: dict[str, Any], as_of: datetime) -> dict[str, dict[str, Any]]:
    path = r.root / "backend" / "logistics_events.jsonl"
    recs: dict[str, dict[str, Any]] = {}
    pats = shop["tracking_number_patterns"]
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except ValueError as e:
                r.err(path, ln, f"invalid JSON: {e}")
                continue
            tn, carrier = rec.get("tracking_number"), rec.get("carrier")
            if carrier not in pats or not re.fullmatch(pats[carrier], tn or ""):
                r.err(path, ln, f"{tn}: tracking number does not match the {carrier} pattern")
            if rec.get("carrier_name_zh") != shop["carriers"].get(carrier, {}).get("zh"):
                r.err(path, ln, f"{tn}: carrier_name_zh does not match shop.yaml")
            if tn in recs:
                r.err(path, ln, f"duplicate tracking number {tn}")
            if rec.get("direction") not in ("outbound", "return", "exchange_outbound"):
                r.err(path, ln, f"{tn}: bad direction {rec.get('direction')!r}")
            evs = rec.get("events") or []
            if not evs:
                r.err(path, ln, f"{tn}: no events")
                continue
            prev = None
            times = []
            for i, e in enumerate(evs):
                for k in ("time", "status", "location_zh", "location_en", "description_zh", "description_en"):
                    if not e.get(k):
                        r.err(path, ln, f"{tn}: event {i} has empty {k}")
                if e.get("status") not in EVENT_CODES:
                    r.err(path, ln, f"{tn}: event {i} has unknown status {e.get('status')!r}")
                t = dt(e["time"])
                times.append(t)
                if prev and t <= prev:
                    r.err(path, ln, f"{tn}: events not in strictly increasing time order at event {i}")
                if t > as_of:
                    r.err(path, ln, f"{tn}: event {i} is after as_of")
                prev = t
            if evs[0]["status"] != "CREATED":
                r.err(path, ln, f"{tn}: first event must be CREATED")
            if any(e["status"] == "DELIVERED" for e in evs[:-1]):
                r.err(path, ln, f"{tn}: DELIVERED must be the last event")
            recs[tn] = {**rec, "line": ln, "times": times, "used": False}
    return recs


# ------------------------------------------------------------------ orders
def check_orders(
    r: Report,
    shop: dict[str, Any],
    products: dict[str, Any],
    users: dict[str, Any],
    logs: dict[str, Any],
    as_of: datetime,
) -> dict[str, dict[str, Any]]:
    path = r.root / "backend" / "orders.jsonl"
    pol = shop["policies"]
    threshold = dec(pol["shipping"]["free_shipping_threshold"])
    fee = dec(pol["shipping"]["shipping_fee"])
    sf_from = dec(pol["shipping"]["sf_express_from_amount"])
    huabei_min = dec(pol["payment"]["huabei_min_amount"])
    installments = {int(k) for k in pol["payment"]["huabei_installments"]}
    pay_timeout = timedelta(hours=pol["orders"]["payment_timeout_hours"])
    auto_confirm = timedelta(days=pol["orders"]["auto_confirm_days"])
    ret_days = pol["returns"]["no_reason_return_days"]
    q_days = pol["returns"]["quality_days"]
    damage = timedelta(hours=pol["returns"]["damage_report_hours"])
    refund_h = timedelta(hours=pol["returns"]["refund_after_receipt_hours"])
    dispatch = timedelta(hours=pol["shipping"]["dispatch_hours"])
    promo_dispatch = timedelta(hours=pol["shipping"]["promo_dispatch_hours"])
    custom_dispatch = timedelta(days=pol["shipping"]["custom_dispatch_days"])
    special_days = timedelta(days=pol["invoices"]["vat_special_request_days_after_delivery"])
    coupons = {c["code"]: c for c in shop["coupons"]}
    pats = shop["tracking_number_patterns"]
    start = datetime.fromisoformat("2026-08-01T00:00:00+08:00")
    orders: dict[str, dict[str, Any]] = {}
    status_count: Counter[str] = Counter()
    coupon_use: Counter[tuple[str, str, str]] = Counter()

    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):

            def e(msg: str, _ln: int = ln) -> None:
                r.err(path, _ln, msg)

            try:
                o = json.loads(line, parse_float=Decimal)
            except ValueError as ex:
                e(f"invalid JSON: {ex}")
                continue
            oid = o.get("order_id")
            if list(o.keys()) != ORDER_KEYS:
                e(f"{oid}: keys must be exactly {ORDER_KEYS}")
                continue
            if not re.fullmatch(shop["order_number_pattern"], oid or ""):
                e(f"{oid}: order id does not match order_number_pattern")
            if oid in orders:
                e(f"duplicate order id {oid}")
            st = o["status"]
            if st not in STATUSES:
                e(f"{oid}: unknown status {st!r}")
                continue
            status_count[st] += 1
            u = users.get(o["user_id"])
            if u is None:
                e(f"{oid}: unknown user {o['user_id']}")
                continue
            try:
                ts = {
                    k: dt(o[k])
                    for k in (
                        "created_at",
                        "payment_expires_at",
                        "paid_at",
                        "shipped_at",
                        "delivered_at",
                        "completed_at",
                        "cancelled_at",
                    )
                }
            except ValueError as ex:
                e(f"{oid}: {ex}")
                continue
            c = ts["created_at"]
            if not (start <= c <= as_of):
                e(f"{oid}: created_at outside 2026-08-01 .. as_of")
            if oid[2:6] != c.strftime("%y%m"):
                e(f"{oid}: order number month {oid[2:6]} does not match created_at")
            if u["registered"] and c < u["registered"]:
                e(f"{oid}: created before the user registered")
            for k, t in ts.items():
                if t and t > as_of and k != "payment_expires_at":
                    e(f"{oid}: {k} is after as_of")
            chain = [ts["created_at"], ts["paid_at"], ts["shipped_at"], ts["delivered_at"], ts["completed_at"]]
            chain = [t for t in chain if t]
            if chain != sorted(chain):
                e(f"{oid}: timestamps out of order (created <= paid <= shipped <= delivered <= completed)")

            # -- items and money
            subtotal = Decimal("0.00")
            if not o["items"]:
                e(f"{oid}: no items")
            skus = [i["sku"] for i in o["items"]]
            if len(skus) != len(set(skus)):
                e(f"{oid}: the same sku appears twice")
            has_custom = False
            for i in o["items"]:
                p = products.get(i["sku"])
                if p is None:
                    e(f"{oid}: unknown sku {i['sku']}")
                    continue
                has_custom |= p["custom"]
                if p["category"] == "gift_cards":
                    e(f"{oid}: gift cards are not sold in regular orders")
                if not two_dp(i["unit_price"]) or i["unit_price"] != p["price_d"]:
                    e(f"{oid}: {i['sku']} unit_price {i['unit_price']} != catalogue price {p['price_d']}")
                if i["name_zh"] != p["name_zh"] or i["name_en"] != p["name_en"]:
                    e(f"{oid}: {i['sku']} names differ from the catalogue")
                if not isinstance(i["qty"], int) or i["qty"] < 1:
                    e(f"{oid}: {i['sku']} bad qty")
                if i["color"] not in p["colors_l"]:
                    e(f"{oid}: {i['sku']} colour {i['color']!r} not in catalogue")
                if (i["size"] is None) != (not p["sizes_l"]) or (i["size"] and i["size"] not in p["sizes_l"]):
                    e(f"{oid}: {i['sku']} size {i['size']!r} does not match catalogue sizes")
                subtotal += i["unit_price"] * i["qty"]
            for k in ("subtotal", "discount", "shipping_fee", "total"):
                if not two_dp(o[k]):
                    e(f"{oid}: {k} must be a number with 2 decimals")
            if o["subtotal"] != subtotal:
                e(f"{oid}: subtotal {o['subtotal']} != sum of items {subtotal}")
            code = o["coupon_code"]
            if code is None:
                if o["discount"] != 0:
                    e(f"{oid}: discount without coupon_code")
            else:
                cp = coupons.get(code)
                if cp is None:
                    e(f"{oid}: unknown coupon {code}")
                else:
                    if o["discount"] != dec(cp["amount"]):
                        e(f"{oid}: discount {o['discount']} != coupon {code} amount {cp['amount']}")
                    if o["subtotal"] < dec(cp["threshold"]) or o["discount"] >= o["subtotal"]:
                        e(f"{oid}: subtotal {o['subtotal']} does not reach coupon {code} threshold")
                    if cp.get("tier") and cp["tier"] != u["member_tier"]:
                        e(f"{oid}: coupon {code} is for {cp['tier']} members, user is {u['member_tier']}")
                    scope = cp["scope"]
                    if scope == "new_user" and (c - u["registered"]) > timedelta(days=30):
                        e(f"{oid}: NEW20 used more than 30 days after registration")
                    if scope == "birthday" and u["birthday"][:2] != c.strftime("%m"):
                        e(f"{oid}: birthday coupon used outside the birthday month")
                    if scope == "d11" and not (dt(cp["valid_from"]) <= c <= dt(cp["valid_to"])):
                        e(f"{oid}: Double 11 coupon used outside its validity")
                    period = {"new_user": "life", "birthday": c.strftime("%Y"), "d11": "d11"}.get(
                        scope, c.strftime("%Y-%m")
                    )
                    coupon_use[(o["user_id"], code, period)] += 1
                    limit = cp.get("per_month") or (3 if scope == "points" else 1)
                    if coupon_use[(o["user_id"], code, period)] > limit:
                        e(f"{oid}: coupon {code} used more than {limit} time(s) per period by {o['user_id']}")
            goods = o["subtotal"] - o["discount"]
            want_fee = Decimal("0.00") if (u["member_tier"] == "platinum" or goods >= threshold) else fee
            if o["shipping_fee"] != want_fee:
                e(f"{oid}: shipping_fee {o['shipping_fee']} should be {want_fee} (goods {goods}, {u['member_tier']})")
            if o["total"] != goods + o["shipping_fee"]:
                e(f"{oid}: total {o['total']} != subtotal - discount + shipping_fee")
            a = o["address"]
            if a["phone"] != u["phone"] or a["province"] != u["province"] or a["street"] != u["street"]:
                e(f"{oid}: address does not match the user's default address")

            # -- payment
            paid = ts["paid_at"]
            if st == "pending_payment":
                if paid or o["payment_method"]:
                    e(f"{oid}: pending_payment order has payment data")
                if ts["payment_expires_at"] != c + pay_timeout or ts["payment_expires_at"] <= as_of:
                    e(f"{oid}: payment_expires_at must be created_at + 24h and still in the future")
            elif o["payment_expires_at"] is not None:
                e(f"{oid}: payment_expires_at is only set on pending_payment orders")
            if paid:
                if o["payment_method"] not in shop["payment_methods"]:
                    e(f"{oid}: unknown payment_method {o['payment_method']!r}")
                if o["payment_method"] == "huabei_installment":
                    if o["installments"] not in installments or o["total"] < huabei_min:
                        e(f"{oid}: Huabei needs installments in {sorted(installments)} and total >= {huabei_min}")
                elif o["installments"] is not None:
                    e(f"{oid}: installments set for a non-Huabei payment")
            elif o["payment_method"] or o["installments"]:
                e(f"{oid}: payment method recorded but paid_at is null")

            # -- cancellation
            if st == "cancelled":
                if not ts["cancelled_at"] or not o["cancel_reason"]:
                    e(f"{oid}: cancelled order needs cancelled_at and cancel_reason")
                if o["shipped_at"] or o["tracking_number"]:
                    e(f"{oid}: cancelled orders must not have shipped")
                if paid:
                    rf = o["refund"]
                    if not rf or rf["amount"] != o["total"] or dt(rf["refunded_at"]) < ts["cancelled_at"]:
                        e(f"{oid}: paid-then-cancelled order needs a full refund after cancelled_at")
                elif o["cancel_reason"]["code"] == "payment_timeout" and ts["cancelled_at"] != c + pay_timeout:
                    e(f"{oid}: payment_timeout cancellation must happen exactly 24h after creation")
                if o["invoice"] is not None:
                    e(f"{oid}: cancelled orders have no invoice")
            elif ts["cancelled_at"] or o["cancel_reason"]:
                e(f"{oid}: cancellation data on a {st} order")
            if st in ("pending_payment", "paid", "processing") or (st == "cancelled" and not paid):
                if o["refund"] is not None:
                    e(f"{oid}: refund on a {st} order")

            # -- shipping and tracking
            lost = bool(o["after_sale"] and o["after_sale"]["reason"]["code"] == "lost_in_transit")
            if st in SHIPPED_STATES:
                tn, carrier = o["tracking_number"], o["carrier"]
                if not tn or carrier not in pats or not re.fullmatch(pats[carrier], tn):
                    e(f"{oid}: {st} order needs a carrier and a tracking number matching its pattern")
                elif tn not in logs:
                    e(f"{oid}: tracking number {tn} has no logistics events")
                else:
                    rec = logs[tn]
                    rec["used"] = True
                    if rec["order_id"] != oid or rec["direction"] != "outbound" or rec["carrier"] != carrier:
                        e(f"{oid}: logistics record {tn} does not point back to this order as outbound/{carrier}")
                    last = rec["events"][-1]["status"]
                    want = {
                        "shipped": {"CREATED", "PICKED_UP"},
                        "in_transit": {"ARRIVED", "DEPARTED", "EXCEPTION"},
                        "out_for_delivery": {"OUT_FOR_DELIVERY"},
                    }.get(st, {"EXCEPTION"} if lost else {"DELIVERED"})
                    if last not in want:
                        e(f"{oid}: status {st} but latest tracking event is {last}")
                    if rec["times"][0] != ts["shipped_at"]:
                        e(f"{oid}: shipped_at != first tracking event time")
                    if ts["delivered_at"] and rec["times"][-1] != ts["delivered_at"]:
                        e(f"{oid}: delivered_at != DELIVERED event time")
                if o["total"] >= sf_from and carrier != "SF":
                    e(f"{oid}: orders of >= ¥{sf_from} must ship with SF Express")
                limit = (
                    custom_dispatch
                    if has_custom
                    else (
                        promo_dispatch if paid and paid.strftime("%m-%d") in ("11-10", "11-11", "11-12") else dispatch
                    )
                )
                if ts["shipped_at"] and paid and ts["shipped_at"] - paid > limit:
                    e(f"{oid}: shipped {ts['shipped_at'] - paid} after payment (limit {limit})")
            elif o["tracking_number"] or o["carrier"] or o["shipped_at"]:
                e(f"{oid}: {st} order must not have carrier/tracking/shipped_at")
            if st in DELIVERED_STATES or (st == "refunded" and not lost):
                if not ts["delivered_at"]:
                    e(f"{oid}: {st} order needs delivered_at")
            elif ts["delivered_at"]:
                e(f"{oid}: {st} order must not have delivered_at")
            if st == "completed":
                if not ts["completed_at"]:
                    e(f"{oid}: completed order needs completed_at")
                elif ts["completed_at"] > ts["delivered_at"] + auto_confirm:
                    e(f"{oid}: completed_at later than the 14-day auto-confirmation")
            if st == "delivered":
                if ts["completed_at"]:
                    e(f"{oid}: delivered order must not have completed_at")
                if ts["delivered_at"] + auto_confirm <= as_of:
                    e(f"{oid}: delivered more than 14 days ago, should have been auto-completed")
            if (
                st not in ("completed", "return_requested", "returned", "refunded", "exchange_requested", "exchanged")
                and ts["completed_at"]
            ):
                e(f"{oid}: completed_at on a {st} order")

            # -- after-sales
            asale = o["after_sale"]
            if st in AFTER_SALE:
                check_after_sale(r, path, ln, o, ts, asale, products, logs, as_of, ret_days, q_days, damage, refund_h)
            elif asale is not None:
                e(f"{oid}: after_sale on a {st} order")
            if st not in ("refunded", "cancelled") and o["refund"] is not None:
                e(f"{oid}: refund recorded on a {st} order")

            # -- invoice
            inv = o["invoice"]
            if inv:
                if inv["type"] not in ("e_normal", "vat_special"):
                    e(f"{oid}: bad invoice type")
                if inv["title_type"] == "company" and not re.fullmatch(r"[0-9A-Z]{18}", inv["tax_id"] or ""):
                    e(f"{oid}: company invoice needs an 18-character tax_id")
                if inv["type"] == "vat_special":
                    if inv["title_type"] != "company":
                        e(f"{oid}: special VAT invoices are for companies only")
                    if not ts["delivered_at"] or dt(inv["requested_at"]) > ts["delivered_at"] + special_days:
                        e(f"{oid}: special VAT invoice must be requested within 30 days of delivery")
                if inv["status"] in ("issued", "reversed", "reissued"):
                    if not re.fullmatch(r"\d{20}", inv["invoice_no"] or "") or not inv["issued_at"]:
                        e(f"{oid}: issued invoice needs a 20-digit invoice_no and issued_at")
                    elif not ts["delivered_at"] or dt(inv["issued_at"]) < ts["delivered_at"]:
                        e(f"{oid}: invoice issued before delivery")
                    elif inv["type"] == "e_normal" and dt(inv["issued_at"]) > ts["delivered_at"] + timedelta(hours=48):
                        e(f"{oid}: e-invoice issued more than 48h after delivery")
                elif inv["status"] == "pending":
                    if (
                        ts["delivered_at"]
                        and ts["delivered_at"] + timedelta(hours=48) < as_of
                        and inv["type"] == "e_normal"
                    ):
                        e(f"{oid}: e-invoice still pending more than 48h after delivery")
                elif inv["status"] != "cancelled":
                    e(f"{oid}: bad invoice status {inv['status']!r}")
                if inv["status"] in ("reversed", "reissued") and not o["refund"]:
                    e(f"{oid}: invoice reversed without a refund")
            orders[oid] = {**o, "line": ln, "ts": ts}

    for stt in STATUSES:
        if status_count[stt] < MIN_PER_STATUS:
            r.err(path, None, f"status {stt} has {status_count[stt]} orders (need >= {MIN_PER_STATUS})")
    if len(orders) < MIN_ORDERS:
        r.err(path, None, f"only {len(orders)} orders (need >= {MIN_ORDERS})")
    # the return-window fixtures only make sense if both kinds exist
    d_as = as_of.date()
    inside = [
        o
        for o in orders.values()
        if o["status"] == "delivered" and (d_as - o["ts"]["delivered_at"].date()).days <= ret_days
    ]
    outside = [
        o
        for o in orders.values()
        if o["status"] == "delivered" and (d_as - o["ts"]["delivered_at"].date()).days > ret_days
    ]
    if not inside or not outside:
        r.err(path, None, "need delivered orders both inside and outside the 7-day return window")
    return orders


def check_after_sale(
    r: Report,
    path: Path,
    ln: int,
    o: dict[str, Any],
    ts: dict[str, Any],
    a: dict[str, Any] | None,
    products: dict[str, Any],
    logs: dict[str, Any],
    as_of: datetime,
    ret_days: int,
    q_days: int,
    damage: timedelta,
    refund_h: timedelta,
) -> None:
    oid, st = o["order_id"], o["status"]

    def e(msg: str) -> None:
        r.err(path, ln, msg)

    if not a:
        e(f"{oid}: {st} order needs after_sale")
        return
    types, states = AFTER_SALE[st]
    if a["type"] not in types or a["status"] not in states:
        e(f"{oid}: after_sale type/status {a['type']}/{a['status']} not valid for order status {st}")
    if not re.fullmatch(r"AS\d{9}", a["id"] or "") or a["id"][2:8] != dt(a["requested_at"]).strftime("%y%m%d"):
        e(f"{oid}: after_sale id must be AS + request date (YYMMDD) + 3 digits")
    req, approved = dt(a["requested_at"]), dt(a["approved_at"])
    if req > as_of or (approved and approved < req):
        e(f"{oid}: after_sale requested_at/approved_at inconsistent")
    reason = a["reason"]["code"]
    lines = {(i["sku"], i["color"], i["size"], i["qty"]) for i in o["items"]}
    for i in a["items"]:
        if (i["sku"], i["color"], i["size"], i["qty"]) not in lines:
            e(f"{oid}: after_sale item {i['sku']} does not match an order line")
    d = ts["delivered_at"]
    if reason == "lost_in_transit":
        if a["type"] != "refund_only" or d is not None:
            e(f"{oid}: lost_in_transit must be a refund_only request on an undelivered order")
        last = logs.get(o["tracking_number"], {}).get("times", [None])[-1]
        if last and req < last:
            e(f"{oid}: lost parcel refund requested before the carrier confirmed the loss")
    elif d is None:
        e(f"{oid}: after_sale without delivered_at")
    else:
        end = d.date() + timedelta(days=(ret_days if reason in NO_REASON else q_days))
        if reason == "damaged_in_transit":
            if req > d + damage:
                e(f"{oid}: transport damage reported more than 48h after delivery")
        elif req.date() > end:
            e(f"{oid}: {reason} request on {req.date()} is outside the window ending {end}")
        if req < d:
            e(f"{oid}: after_sale requested before delivery")
        if reason in NO_REASON:
            for i in a["items"]:
                if products[i["sku"]]["returnable"] != "true":
                    e(f"{oid}: {i['sku']} is not returnable without a reason")
    # money
    if a["type"] in ("return", "refund_only"):
        want = expected_refund(o, a)
        if a["refund_amount"] != want:
            e(f"{oid}: after_sale refund_amount {a['refund_amount']} should be {want}")
    elif a["refund_amount"] is not None:
        e(f"{oid}: exchanges carry no refund_amount")
    if st == "refunded":
        rf = o["refund"]
        if not rf or rf["amount"] != a["refund_amount"] or rf["channel"] != o["payment_method"]:
            e(f"{oid}: refund must equal after_sale.refund_amount, back to the original payment method")
        elif a["return_received_at"]:
            t = dt(rf["refunded_at"])
            if not dt(a["return_received_at"]) <= t <= dt(a["return_received_at"]) + refund_h:
                e(f"{oid}: refund not issued within 48h of receiving the return")
    elif o["refund"] is not None:
        e(f"{oid}: refund recorded before the return was refunded")
    # return parcel
    needs_return = (
        st in ("returned", "exchanged")
        or (st == "refunded" and a["type"] == "return")
        or a["status"] in ("return_in_transit", "received_inspecting", "replacement_shipped")
    )
    rtn = a["return_tracking_number"]
    if needs_return:
        rec = logs.get(rtn or "")
        if not rec:
            e(f"{oid}: return tracking number {rtn} has no logistics events")
        else:
            rec["used"] = True
            if rec["direction"] != "return" or rec["order_id"] != oid or rec["carrier"] != a["return_carrier"]:
                e(f"{oid}: return logistics record {rtn} inconsistent")
            got = dt(a["return_received_at"]) if a["return_received_at"] else None
            delivered_ev = rec["events"][-1]["status"] == "DELIVERED"
            if (got is not None) != delivered_ev or (got and rec["times"][-1] != got):
                e(f"{oid}: return_received_at must equal the return parcel's DELIVERED event")
            if rec["times"][0] < (approved or req):
                e(f"{oid}: return shipped before the request was approved")
    elif rtn:
        rec = logs.get(rtn)
        if rec:
            rec["used"] = True
        if a["status"] != "approved_awaiting_return":
            e(f"{oid}: return tracking number on an after_sale in status {a['status']}")
    # replacement parcel
    if a["type"] == "exchange":
        rep = a["replacement_items"]
        if a["status"] in ("received_inspecting", "replacement_shipped", "completed"):
            if not rep or len(rep) != 1 or rep[0]["sku"] != a["items"][0]["sku"]:
                e(f"{oid}: exchange replacement must be the same sku")
            else:
                p = products[rep[0]["sku"]]
                if rep[0]["color"] not in p["colors_l"] or (rep[0]["size"] or "") not in (p["sizes_l"] or [""]):
                    e(f"{oid}: replacement variant not in the catalogue")
                old = a["items"][0]
                if reason == "size_not_fit" and rep[0]["size"] == old["size"]:
                    e(f"{oid}: size exchange must change the size")
                if reason == "no_reason_exchange" and rep[0]["color"] == old["color"]:
                    e(f"{oid}: colour exchange must change the colour")
                if reason in SELLER_FAULT and (rep[0]["color"], rep[0]["size"]) != (old["color"], old["size"]):
                    e(f"{oid}: quality exchange must be like-for-like")
        xtn = a["replacement_tracking_number"]
        if a["status"] in ("replacement_shipped", "completed"):
            rec = logs.get(xtn or "")
            if not rec:
                e(f"{oid}: replacement tracking number {xtn} has no logistics events")
            else:
                rec["used"] = True
                if rec["direction"] != "exchange_outbound" or rec["order_id"] != oid:
                    e(f"{oid}: replacement logistics record {xtn} inconsistent")
                if rec["times"][0] != dt(a["replacement_shipped_at"]):
                    e(f"{oid}: replacement_shipped_at != first replacement tracking event")
                if a["status"] == "completed" and (
                    rec["events"][-1]["status"] != "DELIVERED" or rec["times"][-1] != dt(a["replacement_delivered_at"])
                ):
                    e(f"{oid}: replacement_delivered_at != replacement DELIVERED event")
                if a["return_received_at"] and rec["times"][0] - dt(a["return_received_at"]) > timedelta(hours=48):
                    e(f"{oid}: replacement shipped more than 48h after the return was received")
        elif xtn:
            e(f"{oid}: replacement tracking number before the return was inspected")


def expected_refund(o: dict[str, Any], a: dict[str, Any]) -> Decimal:
    """Refund = paid amount of the returned lines (coupon split pro rata, last line takes the rounding
    remainder) + the shipping fee when a whole order goes back for a seller-fault reason."""
    reason = a["reason"]["code"]
    if reason == "lost_in_transit":
        return o["total"]
    items, disc, sub = o["items"], o["discount"], o["subtotal"]
    shares, acc = [], Decimal("0.00")
    for idx, i in enumerate(items):
        if idx == len(items) - 1:
            shares.append(disc - acc)
        else:
            s = (disc * i["unit_price"] * i["qty"] / sub).quantize(CENT, rounding="ROUND_HALF_UP")
            shares.append(s)
            acc += s
    returned = {x["sku"] for x in a["items"]}
    amount = sum(
        (i["unit_price"] * i["qty"] - shares[k] for k, i in enumerate(items) if i["sku"] in returned), Decimal("0.00")
    )
    if reason in SELLER_FAULT and len(returned) == len(items):
        amount += o["shipping_fee"]
    return amount.quantize(CENT)


# ------------------------------------------------------------------ fixtures, knowledge, faq
def check_fixtures(r: Report, orders: dict[str, Any], users: dict[str, Any], as_of: datetime, ret_days: int) -> None:
    path = r.root / "fixtures.yaml"
    fx = yaml.safe_load(path.read_text(encoding="utf-8"))
    lines = path.read_text(encoding="utf-8").splitlines()

    def line_of(key: str) -> int:
        return next((i for i, s in enumerate(lines, 1) if s.strip() == f"{key}:"), 0)

    if dt(fx.get("as_of")) != as_of:
        r.err(path, line_of("as_of"), "as_of mismatch")
    required = ["delivered_in_window", "delivered_outside_window", "shipped", "pending_payment", "cancelled"]
    for k in required:
        if k not in fx.get("orders", {}):
            r.err(path, None, f"missing fixture {k}")
    for key, f in fx.get("orders", {}).items():
        ln = line_of(key)
        o = orders.get(f.get("order_id"))
        if o is None:
            r.err(path, ln, f"{key}: unknown order {f.get('order_id')}")
            continue
        if o["status"] != f.get("status") or o["user_id"] != f.get("user_id"):
            r.err(path, ln, f"{key}: status/user_id disagree with orders.jsonl")
        u = users.get(o["user_id"])
        if u and (str(f.get("phone")) != u["phone"] or f.get("name") != u["name"]):
            r.err(path, ln, f"{key}: phone/name disagree with users.csv")
        if f.get("tracking_number") != o["tracking_number"]:
            r.err(path, ln, f"{key}: tracking_number disagrees with orders.jsonl")
        d = o["ts"]["delivered_at"]
        age = (as_of.date() - d.date()).days if d else None
        if key.startswith("delivered_in_window") and not (age is not None and age <= ret_days):
            r.err(path, ln, f"{key}: not inside the {ret_days}-day window")
        if key == "delivered_outside_window" and not (age is not None and age > ret_days):
            r.err(path, ln, f"{key}: not outside the {ret_days}-day window")


def check_readme(r: Report) -> None:
    """The README's fixture table must agree with fixtures.yaml (ids change when the data is regenerated)."""
    path = r.root / "README.md"
    fx = yaml.safe_load((r.root / "fixtures.yaml").read_text(encoding="utf-8"))["orders"]
    seen = set()
    for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*(LM\d{8})\s*\|\s*(U\d{5})\s*\|\s*(\d{11})\s*\|", line)
        if not m:
            continue
        key, oid, uid, phone = m.groups()
        seen.add(key)
        f = fx.get(key)
        if not f or (f["order_id"], f["user_id"], str(f["phone"])) != (oid, uid, phone):
            r.err(path, ln, f"fixture {key} disagrees with fixtures.yaml (regenerated data? update the table)")
    for key in fx:
        if key not in seen:
            r.err(path, None, f"fixture {key} is missing from the README table")


def check_knowledge(r: Report) -> None:
    kdir = r.root / "knowledge"
    for topic in KNOWLEDGE_TOPICS:
        for lang in ("zh", "en"):
            path = kdir / lang / f"{topic}.md"
            if not path.exists():
                r.err(path, None, "missing knowledge document")
                continue
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            if not lines or not lines[0].startswith("# "):
                r.err(path, 1, "must start with a '# ' title")
            if sum(1 for s in lines if s.startswith("## ")) < 3:
                r.err(path, None, "needs at least three '## ' sections")
            size = len(re.sub(r"\s", "", text)) if lang == "zh" else len(text.split())
            lo, hi = (400, 1600) if lang == "zh" else (350, 1200)
            if not lo <= size <= hi:
                r.err(path, None, f"length {size} outside {lo}-{hi} ({'characters' if lang == 'zh' else 'words'})")
            flat = re.sub(r"(?<=\d),(?=\d{3})", "", text)
            for fact in KNOWLEDGE_FACTS[topic]:
                if fact not in flat:
                    r.err(path, None, f"does not mention {fact!r}")
            if (
                lang == "en"
                and re.search(r"[\u4e00-\u9fff]{6,}", re.sub(r"\(.*?\)|（.*?）", "", text))
                and topic not in ("returns", "invoices")
            ):
                r.err(path, None, "long Chinese passage in an English document")


def check_faq(r: Report) -> None:
    path = r.root / "knowledge" / "faq.csv"
    langs: Counter[str] = Counter()
    seen: set[str] = set()
    with open(path, encoding="utf-8", newline="") as f:
        rd = csv.DictReader(f)
        if rd.fieldnames != FAQ_COLS:
            r.err(path, 1, f"header must be {','.join(FAQ_COLS)}")
            return
        for row in rd:
            ln = rd.line_num
            if row["lang"] not in ("zh", "en"):
                r.err(path, ln, f"bad lang {row['lang']!r}")
            langs[row["lang"]] += 1
            if row["category"] not in FAQ_CATEGORIES:
                r.err(path, ln, f"unknown category {row['category']!r}")
            if not row["question"].strip() or not row["answer"].strip():
                r.err(path, ln, "empty question or answer")
            if row["question"] in seen:
                r.err(path, ln, "duplicate question")
            seen.add(row["question"])
            sims = [s for s in row["similar_questions"].split("|") if s.strip()]
            if len(sims) < 2:
                r.err(path, ln, "needs at least two '|'-separated similar_questions")
            has_cjk = bool(re.search(r"[\u4e00-\u9fff]", row["question"] + row["answer"]))
            if has_cjk != (row["lang"] == "zh"):
                r.err(path, ln, f"text language does not match lang={row['lang']}")
    for lang in ("zh", "en"):
        if langs[lang] < 30:
            r.err(path, None, f"only {langs[lang]} {lang} FAQ rows (need >= 30)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    root = args.root.resolve()
    r = Report(root)
    try:
        shop = check_shop(r)
        as_of = dt(yaml.safe_load((root / "fixtures.yaml").read_text(encoding="utf-8"))["as_of"])
        products = check_products(r, shop)
        users = check_users(r, shop)
        logs = check_logistics(r, shop, as_of)
        orders = check_orders(r, shop, products, users, logs, as_of)
        for tn, rec in logs.items():
            if not rec["used"]:
                r.err(
                    root / "backend" / "logistics_events.jsonl",
                    rec["line"],
                    f"{tn}: not referenced by any order in an appropriate state",
                )
            elif rec["order_id"] not in orders:
                r.err(root / "backend" / "logistics_events.jsonl", rec["line"], f"{tn}: unknown order")
        check_fixtures(r, orders, users, as_of, shop["policies"]["returns"]["no_reason_return_days"])
        check_readme(r)
        check_knowledge(r)
        check_faq(r)
    except (OSError, KeyError, ValueError, TypeError) as ex:  # structural problems: report, don't crash
        r.err(root, None, f"could not complete the check: {type(ex).__name__}: {ex}")
    if r.errors:
        for line in r.errors:
            print(line, file=sys.stderr)
        print(f"\n{len(r.errors)} problem(s) found", file=sys.stderr)
        return 1
    print(
        f"OK: {len(products)} products, {len(users)} users, {len(orders)} orders, {len(logs)} shipments; "
        + ", ".join(f"{s}={n}" for s, n in sorted(Counter(o["status"] for o in orders.values()).items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
