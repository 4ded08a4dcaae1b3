"""The demo shop backend (lumo_shop) over HTTP, against a database seeded from examples/demo_shop."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lumo_shop import create_app, seed

DEMO_SHOP = Path(__file__).resolve().parents[2] / "examples" / "demo_shop"
TOKEN = "test-shop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AS_OF = "2026-11-20T15:00:00+08:00"

# Fixture orders (examples/demo_shop/fixtures.yaml)
IN_WINDOW = "LM26110625"  # delivered 2026-11-17, ANC earbuds LM-AU-001 (曜石黑), phone 13156780827
OUTSIDE_WINDOW = "LM26110298"  # delivered 2026-11-09, air fryer
IN_WINDOW_EN = "LM26110737"  # delivered 2026-11-18, LM-WR-003 + LM-WR-006, no invoice yet
ENGRAVED = "LM26110488"  # custom-engraved earbuds LM-AU-008
PROCESSING = "LM26111117"
IN_TRANSIT = "LM26110799"
PAID = "LM26111161"
PENDING_PAYMENT = "LM26110957"


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lumo-shop") / "seeded.db"
    assert seed(path, DEMO_SHOP) is True
    return path


async def _client(db: Path, now: str = "as_of") -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db, DEMO_SHOP, now=now, token=TOKEN)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


@pytest.fixture
async def shop(seeded_db: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh copy of the seeded database per test, served in process at the dataset's snapshot time."""
    db = tmp_path / "shop.db"
    shutil.copy(seeded_db, db)
    async for client in _client(db):
        yield client


async def post(shop: httpx.AsyncClient, path: str, body: dict[str, Any], key: str | None = "") -> httpx.Response:
    """A write with a fresh Idempotency-Key (`key=""`), a given one, or none (`key=None`)."""
    headers = dict(AUTH)
    if key is not None:
        headers["Idempotency-Key"] = key or uuid.uuid4().hex
    return await shop.post(path, json=body, headers=headers)


async def get(shop: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await shop.get(path, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def write_count(shop: httpx.AsyncClient, order_id: str) -> int:
    return len((await get(shop, f"/admin/writes?order_id={order_id}"))["writes"])


async def variant_stock(shop: httpx.AsyncClient, sku: str, color: str, size: str | None = None) -> int:
    product = await get(shop, f"/products/{sku}")
    return int(next(v["stock"] for v in product["variants"] if v["color"] == color and v["size"] == size))


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# ---------------------------------------------------------------- access, clock, errors


async def test_only_health_and_openapi_are_open_without_the_token(shop: httpx.AsyncClient) -> None:
    assert (await shop.get("/healthz")).json() == {"status": "ok"}
    assert (await shop.get("/openapi.json")).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = await shop.get(f"/orders/{IN_WINDOW}", headers=headers)
        assert response.status_code == 401
        assert error_code(response) == "unauthorized"
        assert "Bearer" in response.json()["error"]["message"]
    refused = await shop.post(f"/orders/{PROCESSING}/cancel", json={}, headers={"Idempotency-Key": "k"})
    assert refused.status_code == 401
    assert (await get(shop, f"/orders/{PROCESSING}"))["status"] == "processing"


async def test_clock_defaults_to_the_dataset_snapshot(shop: httpx.AsyncClient) -> None:
    assert (await get(shop, "/clock")) == {"now": AS_OF}


async def test_a_later_clock_closes_the_no_reason_window(seeded_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "later.db"
    shutil.copy(seeded_db, db)
    async for shop in _client(db, now="2026-11-25T00:00:01+08:00"):
        assert (await get(shop, "/clock"))["now"] == "2026-11-25T00:00:01+08:00"
        policy = (await get(shop, f"/orders/{IN_WINDOW}"))["policy"]
        assert policy["returnable_no_reason"] is False
        assert policy["returnable_quality"] is True
        response = await post(shop, f"/orders/{IN_WINDOW}/returns", {"reason_code": "no_reason"})
        assert response.status_code == 409
        assert error_code(response) == "outside_return_window"
        assert "2026-11-24 23:59" in response.json()["error"]["message"]


async def test_unknown_things_are_404_with_an_error_body(shop: httpx.AsyncClient) -> None:
    cases = {
        "/orders/LM26119999": "order_not_found",
        "/orders/LM26119999/logistics": "order_not_found",
        "/orders/LM26119999/refund": "order_not_found",
        "/users/U99999": "user_not_found",
        "/users/U99999/orders": "user_not_found",
        "/products/LM-XX-000": "product_not_found",
        "/logistics/SF0000000000000": "tracking_not_found",
        "/no/such/route": "not_found",
    }
    for path, code in cases.items():
        response = await shop.get(path, headers=AUTH)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
    missing = await post(shop, "/orders/LM26119999/cancel", {"reason_code": "changed_mind"})
    assert missing.status_code == 404
    assert error_code(missing) == "order_not_found"


async def test_openapi_names_every_operation(shop: httpx.AsyncClient) -> None:
    spec = (await shop.get("/openapi.json")).json()
    ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    assert ids == {
        "health", "getClock", "verifyIdentity", "getUser", "listUserOrders", "getOrder", "getOrderLogistics",
        "getTracking", "getProduct", "cancelOrder", "createReturn", "createExchange", "getRefund",
        "changeAddress", "requestInvoice", "listWrites", "resetData", "searchProducts",
    }  # fmt: skip
    create_return = spec["paths"]["/orders/{order_id}/returns"]["post"]
    assert create_return["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AfterSaleCreated"
    )
    assert "ErrorResponse" in create_return["responses"]["409"]["content"]["application/json"]["schema"]["$ref"]


# ---------------------------------------------------------------- identity, users, orders, parcels


async def test_identity_verification_by_full_phone_last_four_or_mismatch(shop: httpx.AsyncClient) -> None:
    async def verify(**body: str) -> dict[str, Any]:
        response = await shop.post("/identity/verify", json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    full = await verify(order_id=IN_WINDOW, phone="13156780827")
    assert full == {"verified": True, "user_id": "U10048", "name_masked": "欧*倩", "reason": None}
    assert (await verify(order_id=IN_WINDOW.lower(), phone="0827"))["verified"] is True
    assert (await verify(order_id=IN_WINDOW, phone="+86 131 5678 0827"))["verified"] is True
    assert await verify(order_id=IN_WINDOW, phone="1234") == {
        "verified": False, "user_id": None, "name_masked": None, "reason": "mismatch",
    }  # fmt: skip
    assert (await verify(order_id=IN_WINDOW, phone="15898643261"))["reason"] == "mismatch"
    assert (await verify(order_id="LM26119999", phone="0827"))["reason"] == "order_not_found"
    assert (await verify(user_id="U10001", phone="3261"))["user_id"] == "U10001"
    assert (await verify(user_id="U10001", phone="0827"))["verified"] is False
    bad = await shop.post("/identity/verify", json={"order_id": IN_WINDOW, "phone": "08271"}, headers=AUTH)
    assert bad.status_code == 422
    assert error_code(bad) == "invalid_phone"


async def test_user_profile_is_masked_and_orders_come_newest_first(shop: httpx.AsyncClient) -> None:
    user = await get(shop, "/users/U10001")
    assert user["phone_masked"] == "158****3261"
    assert user["name"] == "王晓雯"
    assert user["email_masked"].startswith("w***@")
    orders = (await get(shop, "/users/U10001/orders"))["orders"]
    created = [o["created_at"] for o in orders]
    assert created == sorted(created, reverse=True)
    assert OUTSIDE_WINDOW in {o["order_id"] for o in orders}
    delivered = (await get(shop, "/users/U10001/orders?status=delivered&limit=1"))["orders"]
    assert [(o["status"], o["status_zh"]) for o in delivered] == [("delivered", "已签收")]
    bad = await shop.get("/users/U10001/orders?status=teleported", headers=AUTH)
    assert bad.status_code == 422


async def test_order_policy_follows_shop_rules(shop: httpx.AsyncClient) -> None:
    order = await get(shop, f"/orders/{IN_WINDOW}")
    assert (order["user_id"], order["status_zh"], order["status_en"]) == ("U10048", "已签收", "Delivered")
    assert order["items"][0]["sku"] == "LM-AU-001"
    policy = order["policy"]
    assert policy["delivered_days_ago"] == 3
    assert policy["no_reason_return_until"] == "2026-11-24T23:59:59+08:00"
    assert policy["quality_return_until"] == "2026-12-02T23:59:59+08:00"
    assert policy["returnable_no_reason"] and policy["returnable_quality"] and policy["exchangeable"]
    assert not policy["cancellable"] and not policy["address_changeable"]

    late = (await get(shop, f"/orders/{OUTSIDE_WINDOW}"))["policy"]
    assert (late["returnable_no_reason"], late["returnable_quality"]) == (False, True)

    engraved = (await get(shop, f"/orders/{ENGRAVED}"))["policy"]
    assert engraved["non_returnable_items"] == ["LM-AU-008"]
    assert engraved["returnable_no_reason"] is False and engraved["returnable_quality"] is True

    processing = (await get(shop, f"/orders/{PROCESSING}"))["policy"]
    assert processing["cancellable"] and processing["address_changeable"]
    assert processing["delivered_days_ago"] is None


async def test_logistics_of_an_order_and_by_tracking_number(shop: httpx.AsyncClient) -> None:
    shipments = (await get(shop, f"/orders/{IN_WINDOW}/logistics"))["shipments"]
    assert [s["tracking_number"] for s in shipments] == ["78184729385880"]
    assert shipments[0]["latest"]["status"] == "DELIVERED"
    assert shipments[0]["carrier_name_en"] == "ZTO Express"
    parcel = await get(shop, "/logistics/78184729385880")
    assert parcel["order_id"] == IN_WINDOW
    assert parcel["events"] == shipments[0]["events"]
    assert (await get(shop, f"/orders/{PROCESSING}/logistics"))["shipments"] == []


async def test_reads_answer_while_a_writer_holds_the_database(seeded_db: Path, tmp_path: Path) -> None:
    """Reads run on the server's event loop: in WAL mode a write transaction in progress never makes them wait."""
    db = tmp_path / "shop.db"
    shutil.copy(seeded_db, db)
    async for client in _client(db):
        writer = sqlite3.connect(db, timeout=0)
        try:
            writer.execute("BEGIN EXCLUSIVE")
            writer.execute("UPDATE orders SET status = status")
            order = await client.get(f"/orders/{IN_WINDOW}", headers=AUTH)
            verified = await client.post(
                "/identity/verify", json={"order_id": IN_WINDOW, "phone": "13156780827"}, headers=AUTH
            )
        finally:
            writer.rollback()
            writer.close()
    assert order.status_code == 200 and order.json()["order_id"] == IN_WINDOW
    assert verified.status_code == 200 and verified.json()["verified"] is True


async def test_reads_do_not_wait_for_the_writers_connections(seeded_db: Path, tmp_path: Path) -> None:
    """The event loop's reads have a connection of their own: writes holding every pooled connection don't stop them."""
    db = tmp_path / "shop.db"
    shutil.copy(seeded_db, db)
    app = create_app(db, DEMO_SHOP, token=TOKEN)
    engine = app.state.engine
    engine.pool._timeout = 0.5  # a read that did wait for the pool would fail fast instead of after 30 s
    async with app.router.lifespan_context(app):
        held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                order = await client.get(f"/orders/{IN_WINDOW}", headers=AUTH)
        finally:
            for conn in held:
                conn.close()
    assert order.status_code == 200 and order.json()["order_id"] == IN_WINDOW


async def test_refund_status_of_a_received_return(shop: httpx.AsyncClient) -> None:
    refund = await get(shop, "/orders/LM26110246/refund")  # returned, received 2026-11-20T10:29:46
    assert refund["refund"] is None
    assert refund["after_sale"]["status"] == "received_inspecting"
    assert refund["expected_by"] == "2026-11-22T10:29:46+08:00"
    cancelled = await get(shop, "/orders/LM26110133/refund")
    assert cancelled["refund"]["amount"] > 0 and cancelled["expected_by"] is None


# ---------------------------------------------------------------- writes: returns and idempotency


async def test_write_without_idempotency_key_is_refused(shop: httpx.AsyncClient) -> None:
    response = await post(shop, f"/orders/{IN_WINDOW}/returns", {"reason_code": "no_reason"}, key=None)
    assert response.status_code == 400
    assert error_code(response) == "idempotency_key_required"
    assert (await get(shop, f"/orders/{IN_WINDOW}"))["status"] == "delivered"
    assert await write_count(shop, IN_WINDOW) == 0


async def test_no_reason_return_happens_once_and_replays(shop: httpx.AsyncClient) -> None:
    path = f"/orders/{IN_WINDOW}/returns"
    first = await post(shop, path, {"reason_code": "no_reason"}, key="return-625")
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["type"] == "return"
    assert created["status"] == "approved_awaiting_return"
    assert created["id"].startswith("AS261120")
    assert created["refund_amount"] == 899.0
    assert created["order_status"] == "return_requested"
    assert created["return_postage"] == "buyer"
    assert created["return_address"]["postal_code"] == "201708"
    assert created["ship_back_by"] == "2026-11-27T15:00:00+08:00"
    assert "Idempotent-Replayed" not in first.headers

    replay = await post(shop, path, {"reason_code": "no_reason"}, key="return-625")
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == created
    assert await write_count(shop, IN_WINDOW) == 1
    order = await get(shop, f"/orders/{IN_WINDOW}")
    assert order["status"] == "return_requested"
    assert order["after_sale"]["id"] == created["id"]

    reused = await post(shop, path, {"reason_code": "quality_issue"}, key="return-625")
    assert reused.status_code == 422
    assert error_code(reused) == "idempotency_key_reused"
    again = await post(shop, path, {"reason_code": "no_reason"})
    assert again.status_code == 409
    assert error_code(again) == "after_sale_exists"
    assert await write_count(shop, IN_WINDOW) == 1
    log = (await get(shop, "/admin/writes"))["writes"]
    assert [(w["operation"], w["order_id"], w["idempotency_key"]) for w in log] == [
        ("createReturn", IN_WINDOW, "return-625")
    ]
    assert log[0]["response"] == created


async def test_outside_no_reason_window_a_quality_return_is_still_allowed(shop: httpx.AsyncClient) -> None:
    path = f"/orders/{OUTSIDE_WINDOW}/returns"
    refused = await post(shop, path, {"reason_code": "no_reason"})
    assert refused.status_code == 409
    assert error_code(refused) == "outside_return_window"
    assert "2026-11-16" in refused.json()["error"]["message"]
    quality = await post(shop, path, {"reason_code": "quality_issue", "detail": "加热不均匀"})
    assert quality.status_code == 201, quality.text
    body = quality.json()
    assert (body["status"], body["approved_at"], body["ship_back_by"]) == ("pending_review", None, None)
    assert body["return_postage"] == "lumo"
    assert body["detail"]["zh"] == "加热不均匀"
    assert await write_count(shop, OUTSIDE_WINDOW) == 1


async def test_engraved_item_cannot_be_returned_without_a_reason(shop: httpx.AsyncClient) -> None:
    response = await post(shop, f"/orders/{ENGRAVED}/returns", {"reason_code": "no_reason"})
    assert response.status_code == 409
    assert error_code(response) == "not_returnable"
    assert response.json()["error"]["details"]["items"] == ["LM-AU-008"]
    assert "LM-AU-008" in response.json()["error"]["message"]
    assert (await get(shop, f"/orders/{ENGRAVED}"))["status"] == "delivered"


async def test_return_before_delivery_and_of_foreign_items_is_refused(shop: httpx.AsyncClient) -> None:
    not_delivered = await post(shop, f"/orders/{IN_TRANSIT}/returns", {"reason_code": "quality_issue"})
    assert (not_delivered.status_code, error_code(not_delivered)) == (409, "not_delivered")
    body = {"reason_code": "no_reason", "items": [{"sku": "LM-KT-001", "qty": 1}]}
    foreign = await post(shop, f"/orders/{IN_WINDOW_EN}/returns", body)
    assert (foreign.status_code, error_code(foreign)) == (422, "item_not_in_order")


async def test_partial_return_refunds_the_line_only(shop: httpx.AsyncClient) -> None:
    body = {"reason_code": "no_reason", "items": [{"sku": "LM-WR-006", "qty": 1}]}
    response = await post(shop, f"/orders/{IN_WINDOW_EN}/returns", body)
    assert response.status_code == 201, response.text
    assert [i["sku"] for i in response.json()["items"]] == ["LM-WR-006"]
    assert response.json()["refund_amount"] == 79.0


# ---------------------------------------------------------------- writes: cancel, address, exchange, invoice


async def test_cancel_before_shipment_refunds_and_after_is_refused(shop: httpx.AsyncClient) -> None:
    response = await post(shop, f"/orders/{PROCESSING}/cancel", {"reason_code": "changed_mind"})
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["status"] == "cancelled"
    assert order["cancel_reason"] == {"code": "changed_mind", "zh": "不想要了", "en": "Changed my mind"}
    assert order["refund"] == {"amount": order["total"], "refunded_at": AS_OF, "channel": "alipay"}
    assert order["policy"]["cancellable"] is False

    refused = await post(shop, f"/orders/{IN_TRANSIT}/cancel", {"reason_code": "changed_mind"})
    assert refused.status_code == 409
    assert error_code(refused) == "not_cancellable"
    assert "in_transit" in refused.json()["error"]["message"]
    assert (await get(shop, f"/orders/{IN_TRANSIT}"))["status"] == "in_transit"
    assert await write_count(shop, IN_TRANSIT) == 0

    unpaid = (await post(shop, f"/orders/{PENDING_PAYMENT}/cancel", {"reason_code": None})).json()
    assert (unpaid["status"], unpaid["refund"], unpaid["cancel_reason"]["code"]) == ("cancelled", None, "other")


async def test_address_changes_only_before_shipment_and_within_the_mainland(shop: httpx.AsyncClient) -> None:
    new_address = {
        "recipient": "林晨",
        "province": "浙江省",
        "city": "杭州市",
        "district": "西湖区",
        "street": "文三路 1 号",
    }
    changed = await post(shop, f"/orders/{PAID}/address", new_address)
    assert changed.status_code == 200, changed.text
    address = changed.json()["address"]
    assert (address["province"], address["province_en"], address["street"]) == ("浙江", "Zhejiang", "文三路 1 号")
    assert address["phone"] == "15733842960"
    assert (await get(shop, f"/orders/{PAID}"))["address"] == address

    shipped = await post(shop, f"/orders/{IN_TRANSIT}/address", new_address)
    assert (shipped.status_code, error_code(shipped)) == (409, "already_shipped")
    for province in ("香港", "Taiwan", "California"):
        abroad = await post(shop, f"/orders/{PENDING_PAYMENT}/address", {**new_address, "province": province})
        assert (abroad.status_code, error_code(abroad)) == (422, "region_not_served")
    english = await post(shop, f"/orders/{PENDING_PAYMENT}/address", {**new_address, "province": "Guangdong"})
    assert english.json()["address"]["province"] == "广东"
    assert await write_count(shop, IN_TRANSIT) == 0


async def test_exchange_to_a_stocked_variant_takes_stock_exactly_once(shop: httpx.AsyncClient) -> None:
    before = await variant_stock(shop, "LM-AU-001", "月光白/Moonlight White")
    body = {"sku": "LM-AU-001", "color": "moonlight WHITE", "reason_code": "size_color"}
    first = await post(shop, f"/orders/{IN_WINDOW}/exchanges", body, key="swap-625")
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["type"] == "exchange"
    assert created["replacement_items"] == [
        {"sku": "LM-AU-001", "qty": 1, "color": "月光白/Moonlight White", "size": None}
    ]
    assert created["order_status"] == "exchange_requested"
    replay = await post(shop, f"/orders/{IN_WINDOW}/exchanges", body, key="swap-625")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await variant_stock(shop, "LM-AU-001", "月光白/Moonlight White") == before - 1
    assert await write_count(shop, IN_WINDOW) == 1


async def test_exchange_to_a_sold_out_or_unknown_variant_is_refused(shop: httpx.AsyncClient) -> None:
    path = f"/orders/{IN_WINDOW_EN}/exchanges"
    sold_out = await post(shop, path, {"sku": "LM-WR-003", "color": "薄荷绿", "reason_code": "size_color"})
    assert sold_out.status_code == 409
    assert error_code(sold_out) == "out_of_stock"
    alternatives = {v["color"] for v in sold_out.json()["error"]["details"]["in_stock"]}
    assert "樱花粉/Blossom Pink" in alternatives
    assert "樱花粉/Blossom Pink" in sold_out.json()["error"]["message"]
    assert await variant_stock(shop, "LM-WR-003", "薄荷绿/Mint Green") == 0

    unknown = await post(shop, path, {"sku": "LM-WR-003", "color": "purple", "reason_code": "size_color"})
    assert (unknown.status_code, error_code(unknown)) == (422, "unknown_variant")
    assert "Obsidian Black" in unknown.json()["error"]["message"]
    same = await post(shop, path, {"sku": "LM-WR-006", "reason_code": "quality_issue"})  # its Orange/L is sold out
    assert (same.status_code, error_code(same)) == (409, "out_of_stock")
    swap = {"sku": "LM-AU-008", "color": "曜石黑", "reason_code": "size_color"}
    engraved = await post(shop, f"/orders/{ENGRAVED}/exchanges", swap)
    assert (engraved.status_code, error_code(engraved)) == (409, "not_exchangeable")
    assert await write_count(shop, IN_WINDOW_EN) == 0
    assert (await get(shop, f"/orders/{IN_WINDOW_EN}"))["status"] == "delivered"


async def test_invoice_rules(shop: httpx.AsyncClient) -> None:
    path = f"/orders/{IN_WINDOW_EN}/invoices"
    company = {"type": "e_normal", "title_type": "company", "title": "杭州云杉数字科技有限公司", "tax_id": None}
    no_tax_id = await post(shop, path, company)
    assert (no_tax_id.status_code, error_code(no_tax_id)) == (422, "invalid_tax_id")
    personal_vat = await post(shop, path, {"type": "vat_special", "title_type": "personal", "title": "Tom"})
    assert (personal_vat.status_code, error_code(personal_vat)) == (422, "vat_special_requires_company")

    vat = {**company, "type": "vat_special", "tax_id": "91330106ma2kxt4q8r", "email": "finance@example.com"}
    created = await post(shop, path, vat)
    assert created.status_code == 201, created.text
    invoice = created.json()
    assert (invoice["status"], invoice["tax_id"], invoice["order_id"]) == (
        "pending",
        "91330106MA2KXT4Q8R",
        IN_WINDOW_EN,
    )
    assert (await get(shop, f"/orders/{IN_WINDOW_EN}"))["invoice"]["type"] == "vat_special"
    twice = await post(shop, path, {"type": "e_normal", "title_type": "personal", "title": "Tom Becker"})
    assert (twice.status_code, error_code(twice)) == (409, "invoice_exists")

    personal = {"type": "e_normal", "title_type": "personal", "title": "个人"}
    unpaid = await post(shop, f"/orders/{PENDING_PAYMENT}/invoices", personal)
    assert (unpaid.status_code, error_code(unpaid)) == (409, "invoice_not_allowed")
    assert await write_count(shop, IN_WINDOW_EN) == 1


async def test_special_vat_invoices_close_30_days_after_delivery(seeded_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "december.db"
    shutil.copy(seeded_db, db)
    async for shop in _client(db, now="2026-12-19T00:00:00+08:00"):  # delivered 2026-11-18
        path = f"/orders/{IN_WINDOW_EN}/invoices"
        company = {"title_type": "company", "title": "杭州云杉数字科技有限公司", "tax_id": "91330106MA2KXT4Q8R"}
        late = await post(shop, path, {**company, "type": "vat_special"})
        assert (late.status_code, error_code(late)) == (409, "outside_invoice_window")
        assert "2026-12-18" in late.json()["error"]["message"]
        assert (await post(shop, path, {**company, "type": "e_normal"})).status_code == 201


async def test_invalid_bodies_get_a_readable_422(shop: httpx.AsyncClient) -> None:
    response = await post(shop, f"/orders/{IN_WINDOW}/returns", {"reason_code": "bored"})
    assert response.status_code == 422
    assert error_code(response) == "invalid_request"
    assert "reason_code" in response.json()["error"]["message"]


# ---------------------------------------------------------------- catalogue, seeding, the real server


@pytest.mark.parametrize(
    ("sku", "color", "size", "in_stock"),
    [
        ("LM-AU-001", "冰川蓝/Glacier Blue", None, False),
        ("LM-WR-003", "薄荷绿/Mint Green", None, False),
        ("LM-WR-006", "活力橙/Energy Orange", "L", False),
        ("LM-AU-001", "月光白/Moonlight White", None, True),
        ("LM-WR-003", "樱花粉/Blossom Pink", None, True),
        ("LM-WR-006", "活力橙/Energy Orange", "S", True),
        ("LM-KT-001", "曜石黑/Obsidian Black", None, True),
    ],
)
async def test_documented_variant_stock(
    shop: httpx.AsyncClient, sku: str, color: str, size: str | None, in_stock: bool
) -> None:
    """The table in docs/demo-backend.md, which exchange scenarios rely on."""
    assert (await variant_stock(shop, sku, color, size) > 0) is in_stock


async def test_product_stock_is_the_catalogue_total_split_over_variants(shop: httpx.AsyncClient) -> None:
    product = await get(shop, "/products/lm-wr-006")
    assert product["stock"] == 480 == sum(v["stock"] for v in product["variants"])
    assert len(product["variants"]) == 6
    assert product["category_zh"] == "智能穿戴"


def test_seeding_is_idempotent_and_reset_starts_over(seeded_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "again.db"
    shutil.copy(seeded_db, db)
    assert seed(db, DEMO_SHOP) is False
    assert seed(db, DEMO_SHOP, reset=True) is True


async def test_admin_reset_reloads_the_dataset_and_empties_the_write_log(shop: httpx.AsyncClient) -> None:
    before = await variant_stock(shop, "LM-AU-001", "月光白/Moonlight White")
    swap = {"sku": "LM-AU-001", "color": "月光白", "reason_code": "size_color"}
    assert (await post(shop, f"/orders/{IN_WINDOW}/exchanges", swap, key="swap")).status_code == 201
    assert (await post(shop, f"/orders/{PROCESSING}/cancel", {"reason_code": "changed_mind"})).status_code == 200
    assert (await shop.post("/admin/reset")).status_code == 401  # token-protected like the write log
    reset = await shop.post("/admin/reset", headers=AUTH)
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"status": "reset", "orders": 238}
    assert (await get(shop, f"/orders/{IN_WINDOW}"))["status"] == "delivered"
    assert (await get(shop, f"/orders/{PROCESSING}"))["status"] == "processing"
    assert await variant_stock(shop, "LM-AU-001", "月光白/Moonlight White") == before
    assert (await get(shop, "/admin/writes"))["writes"] == []
    # The old idempotency keys are gone with the log: the same request acts again, once.
    again = await post(shop, f"/orders/{IN_WINDOW}/exchanges", swap, key="swap")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert await write_count(shop, IN_WINDOW) == 1


def test_lumo_shop_serve_answers_over_real_http(seeded_db: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("lumo-shop")
    assert script.exists(), "run `pip install -e .` so the lumo-shop script exists"
    db = tmp_path / "served.db"
    shutil.copy(seeded_db, db)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "LUMO_SHOP_TOKEN": "served-token"}
    command = [str(script), "serve", "--port", str(port), "--db", str(db), "--data", str(DEMO_SHOP)]
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command, "--log-level", "warning"], stdout=log, stderr=log, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "lumo-shop serve did not become healthy in 20 s"
                time.sleep(0.1)
            order = httpx.get(f"{base}/orders/{IN_WINDOW}", headers={"Authorization": "Bearer served-token"})
            assert order.status_code == 200
            assert order.json()["policy"]["returnable_no_reason"] is True
            assert httpx.get(f"{base}/clock", headers=AUTH).status_code == 401
        finally:
            process.terminate()
            process.wait(timeout=10)
