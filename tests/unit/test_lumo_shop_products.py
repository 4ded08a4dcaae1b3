"""The demo backend's product search (GET /products?q=…), which the tool agent uses when a customer names no SKU."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from lumo_shop import create_app

DEMO_SHOP = Path(__file__).resolve().parents[2] / "examples" / "demo_shop"
AUTH = {"Authorization": "Bearer test-shop-token"}


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(tmp_path / "shop.db", DEMO_SHOP, now="as_of", token="test-shop-token")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop") as client:
            yield client


async def search(shop: httpx.AsyncClient, q: str, **params: int) -> list[tuple[str, int]]:
    response = await shop.get("/products", params={"q": q, **params}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == q
    return [(p["sku"], p["stock"]) for p in body["products"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("降噪耳机", [("LM-AU-004", 97), ("LM-AU-001", 356)]),  # every character pair, then most of them
        ("空气炸锅", [("LM-KT-001", 320)]),
        ("Air Fryer", [("LM-KT-001", 320)]),
        ("lm-kt-005", [("LM-KT-005", 0)]),  # sold out: found, with no stock
        ("咖啡机", [("LM-KT-005", 0)]),
        ("flying carpet", []),
    ],
)
async def test_products_are_found_by_the_words_customers_use(
    shop: httpx.AsyncClient, query: str, expected: list[tuple[str, int]]
) -> None:
    assert await search(shop, query) == expected


async def test_the_stock_is_the_sum_over_variants_and_has_the_product_options(shop: httpx.AsyncClient) -> None:
    response = await shop.get("/products", params={"q": "Tempo Band 8"}, headers=AUTH)
    (match,) = [p for p in response.json()["products"] if p["sku"] == "LM-WR-003"]
    product = (await shop.get("/products/LM-WR-003", headers=AUTH)).json()
    assert match["stock"] == product["stock"] == sum(v["stock"] for v in product["variants"])
    assert match["colors"] == product["colors"] and match["price"] == product["price"]


async def test_results_are_limited(shop: httpx.AsyncClient) -> None:
    assert len(await search(shop, "Vela X7")) == 5  # the default limit; more products name the Vela X7
    assert len(await search(shop, "Vela X7", limit=2)) == 2


@pytest.mark.parametrize("params", [{"q": ""}, {"q": "   "}, {}, {"q": "耳机", "limit": 0}])
async def test_an_empty_query_is_a_readable_422(shop: httpx.AsyncClient, params: dict[str, str | int]) -> None:
    response = await shop.get("/products", params=params, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_search_needs_the_token(shop: httpx.AsyncClient) -> None:
    assert (await shop.get("/products", params={"q": "耳机"})).status_code == 401
