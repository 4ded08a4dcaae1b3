"""Returns and exchanges done by a customer in the web widget, in real headless Chromium, against a real kefu
server talking over HTTP to the demo shop's backend (lumo_shop) served on its own port with its own database.

What the customer sees is checked on the page; what the shop's database records is read back from the backend's
write log: a completed return or exchange writes exactly once (a second "确认" changes nothing), a refused return
writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from lumo_shop.app import create_app as create_shop_app
from tests.conftest import DEMO_SHOP, make_settings
from tests.support.browser import launch_chromium
from tests.support.live_server import live_server

pytestmark = pytest.mark.browser

AS_OF = "2026-11-20T15:00:00+08:00"
"""The demo data's "now": LM26110625 was delivered three days earlier, LM26110298 eleven."""
TOKEN = "e2e-shop-token"
NOT_FROM_THE_MODEL = "(the model was asked; this conversation should be handled by the flow alone)"


@dataclass(frozen=True)
class Servers:
    kefu_url: str
    shop_url: str

    def writes(self, order_id: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.shop_url}/admin/writes",
            params={"order_id": order_id},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        response.raise_for_status()
        body = response.json()
        return list(body["writes"] if isinstance(body, dict) else body)

    def order(self, order_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.shop_url}/orders/{order_id}", headers={"Authorization": f"Bearer {TOKEN}"})
        response.raise_for_status()
        return dict(response.json())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    shop_app = create_shop_app(tmp_path_factory.mktemp("shop") / "shop.db", DEMO_SHOP, now="as_of", token=TOKEN)
    with live_server(shop_app) as shop_url:
        saved = {k: os.environ.get(k) for k in ("LUMO_SHOP_URL", "LUMO_SHOP_TOKEN")}
        # actions.yaml reads the backend's address and token from the environment, as in a deployment
        os.environ.update(LUMO_SHOP_URL=shop_url, LUMO_SHOP_TOKEN=TOKEN)
        try:
            settings = make_settings(tmp_path_factory.mktemp("kefu"), dialogue={"now": AS_OF})
            llm = ScriptedLLM(default_reply=NOT_FROM_THE_MODEL)
            with live_server(create_app(settings, llm=llm)) as kefu_url:
                yield Servers(kefu_url, shop_url)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1100, "height": 760})
    yield context.new_page()
    context.close()


class Widget:
    """The chat widget as the customer sees it."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        page.goto(base_url)
        self.input = page.locator(".kefu-input")
        self.replies = page.locator(".kefu-msg[data-role=assistant] .kefu-bubble")
        expect(page.locator(".kefu-status")).to_have_attribute("data-status", "open")

    def say(self, text: str, *, expect_reply: str) -> str:
        """Send a message and wait for the bot's answer to it, which must contain `expect_reply`."""
        before = self.replies.count()
        self.input.fill(text)
        self.input.press("Enter")
        expect(self.replies).to_have_count(before + 1, timeout=15_000)
        reply = self.replies.nth(before)
        expect(reply).to_contain_text(expect_reply)
        return reply.inner_text()


def test_a_return_in_the_web_chat_is_filed_exactly_once(page: Page, servers: Servers) -> None:
    chat = Widget(page, servers.kefu_url)

    chat.say("我要退货", expect_reply="订单号")
    chat.say("LM26110625", expect_reply="手机号")
    chat.say("0827", expect_reply="退货原因")
    chat.say("不想要了", expect_reply="确认")
    assert servers.writes("LM26110625") == []  # nothing is written before the customer confirms
    done = chat.say("确认", expect_reply="退货申请已提交")
    chat.say("确认", expect_reply="不会重复提交")

    writes = servers.writes("LM26110625")
    assert [w["operation"] for w in writes] == ["createReturn"]
    after_sale = writes[0]["response"]["id"]
    assert after_sale in done
    assert servers.order("LM26110625")["status"] == "return_requested"
    assert NOT_FROM_THE_MODEL not in " ".join(chat.replies.all_inner_texts())


def test_an_exchange_skips_a_sold_out_colour_and_is_filed_exactly_once(browser: Browser, servers: Servers) -> None:
    context = browser.new_context(locale="en-US", viewport={"width": 1100, "height": 760})
    chat = Widget(context.new_page(), servers.kefu_url)
    try:
        chat.say("I want to exchange order LM26110737", expect_reply="phone")
        chat.say("6436", expect_reply="which one")  # a band and a strap in that order
        chat.say("the Tempo Band", expect_reply="Which colour or size")
        chat.say("Mint Green", expect_reply="out of stock")  # sold out: refused before any confirmation
        chat.say("pink", expect_reply="Blossom Pink. Shall I submit it?")
        assert servers.writes("LM26110737") == []
        done = chat.say("yes", expect_reply="Your exchange is filed")
        chat.say("yes", expect_reply="nothing was submitted twice")
    finally:
        context.close()

    writes = servers.writes("LM26110737")
    assert [w["operation"] for w in writes] == ["createExchange"]
    assert writes[0]["request"]["color"] == "樱花粉/Blossom Pink" and writes[0]["response"]["id"] in done
    assert servers.order("LM26110737")["status"] == "exchange_requested"


def test_a_return_outside_the_window_is_refused_and_changes_nothing(page: Page, servers: Servers) -> None:
    chat = Widget(page, servers.kefu_url)

    chat.say("我要退货，订单 LM26110298", expect_reply="手机号")
    chat.say("15898643261", expect_reply="退货原因")
    refused = chat.say("不喜欢了", expect_reply="无理由")

    assert "质量问题" in refused  # the customer learns the quality window is still open
    assert servers.writes("LM26110298") == []
    assert servers.order("LM26110298")["status"] == "delivered"
