"""A customer in the web widget and an agent in the console, both in real headless Chromium, one real kefu server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from tests.conftest import make_settings
from tests.support.browser import ARTIFACTS_DIR, launch_chromium
from tests.support.live_server import live_server

pytestmark = pytest.mark.browser

AGENT = "mia"
PASSWORD = "correct horse battery"
BOT_ANSWER = "您好！订单付款后 48 小时内发货，一般 2 到 4 天送达。"
AGENT_GREETING = "您好，我是 Mia，马上为您查询订单。"
CUSTOMER_FOLLOW_UP = "订单号是 LM20260301"
QUEUE_TIMEOUT_MS = 1000
"""How soon a new handoff must reach the agent's queue once the customer has their answer."""


@dataclass(frozen=True)
class Shop:
    base_url: str
    llm: ScriptedLLM


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    llm = ScriptedLLM(default_reply=BOT_ANSWER, chunk_chars=3)
    # Within the demo shop's support hours (09:00-21:00 Shanghai), so the customer is queued for a person.
    settings = make_settings(tmp_path_factory.mktemp("kefu"), dialogue={"now": "2026-03-02T10:00:00+08:00"})
    with live_server(create_app(settings, llm=llm)) as base_url:
        # Open demo mode lets the first account be created without signing in; from then on agents sign in.
        account = {"username": AGENT, "password": PASSWORD, "role": "agent"}
        assert httpx.post(f"{base_url}/v1/admin/users", json=account).status_code == 201
        yield Shop(base_url, llm)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def pages(browser: Browser) -> Iterator[tuple[Page, Page]]:
    """The customer's page (Chinese browser) and the agent's (English browser), in separate profiles."""
    customer = browser.new_context(locale="zh-CN", viewport={"width": 1100, "height": 760})
    agent = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 860})
    yield customer.new_page(), agent.new_page()
    customer.close()
    agent.close()


class Widget:
    """The chat widget as the customer sees it."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        page.goto(base_url)
        self.input = page.locator(".kefu-input")
        self.replies = page.locator(".kefu-msg[data-role=assistant] .kefu-bubble")
        self.agent_messages = page.locator(".kefu-msg[data-role=agent]")
        self.notices = page.locator(".kefu-notice")
        self.mode = page.locator(".kefu-mode")
        expect(page.locator(".kefu-status")).to_have_attribute("data-status", "open")

    def ask(self, text: str) -> None:
        self.input.fill(text)
        self.input.press("Enter")

    def wait_until_answered(self) -> None:
        """Every message sent has had its turn's reply (spoken or silent): the outbox is empty."""
        key = f"kefu:{self.base_url}:outbox"
        self.page.wait_for_function("key => localStorage.getItem(key) === '[]'", arg=key)


class AgentConsole:
    """The /console page as the agent sees it."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        page.goto(f"{base_url}/console")
        self.queue = page.locator(".queue-item")
        self.transcript = page.locator("#transcript .msg")
        self.reply = page.locator("#reply-text")

    def sign_in(self, username: str, password: str) -> None:
        expect(self.page.locator("#signin h1")).to_have_text("Agent console")
        self.page.locator("#signin-username").fill(username)
        self.page.locator("#signin-password").fill(password)
        self.page.locator("#signin-submit").click()
        expect(self.page.locator("#workspace")).to_be_visible()
        expect(self.page.locator("#connection")).to_have_attribute("data-status", "open")


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    path = ARTIFACTS_DIR / name
    page.wait_for_timeout(300)  # let transitions settle before the picture
    page.screenshot(path=path)
    return path


def test_an_agent_takes_over_from_the_bot_and_hands_back(pages: tuple[Page, Page], shop: Shop) -> None:
    customer_page, agent_page = pages
    console = AgentConsole(agent_page, shop.base_url)
    console.sign_in(AGENT, PASSWORD)
    expect(console.queue).to_have_count(0)
    widget = Widget(customer_page, shop.base_url)

    widget.ask("转人工")
    expect(widget.replies).to_have_count(1)
    expect(widget.replies.first).to_contain_text("排在第 1 位")
    expect(widget.mode).to_have_text("排队等待人工客服")

    expect(console.queue).to_have_count(1, timeout=QUEUE_TIMEOUT_MS)
    ticket = console.queue.first
    expect(ticket.locator(".reason")).to_have_text("Asked for a person")
    expect(ticket.locator(".place")).to_have_text("#1 in queue")
    waited = ticket.locator(".waiting").inner_text()
    expect(ticket.locator(".waiting")).not_to_have_text(waited, timeout=2500)  # the wait is counted live

    ticket.locator(".claim").click()
    expect(agent_page.locator("#ticket-meta")).to_contain_text("In progress")
    expect(console.transcript.locator(".msg-text")).to_have_text(
        ["转人工", widget.replies.first.inner_text(), f"人工客服 {AGENT} 已接入，正在为您服务。"]
    )
    expect(agent_page.locator("#context dd[data-key=intent]")).to_have_text("human_agent")
    expect(agent_page.locator("#context dd[data-key=summary]")).to_contain_text("customer said: 转人工")
    expect(widget.notices.last).to_have_text(f"人工客服 {AGENT} 已接入，正在为您服务。")
    expect(widget.mode).to_have_attribute("data-mode", "agent")

    console.reply.fill(AGENT_GREETING)
    console.reply.press("Enter")
    expect(widget.agent_messages.locator(".kefu-bubble")).to_have_text([AGENT_GREETING])
    expect(widget.agent_messages.locator(".kefu-sender")).to_have_text(f"人工客服 · {AGENT}")
    expect(widget.mode).to_have_text(f"人工客服 {AGENT} 为您服务")

    widget.ask(CUSTOMER_FOLLOW_UP)
    expect(agent_page.locator("#transcript .msg--user .msg-text").last).to_have_text(CUSTOMER_FOLLOW_UP)
    widget.wait_until_answered()
    expect(widget.replies).to_have_count(1)  # the bot stayed silent: no new (or empty) bubble
    screenshot(agent_page, "agent-console-en.png")
    screenshot(customer_page, "agent-widget-zh.png")

    agent_page.locator("#close-code").select_option("resolved")
    agent_page.locator("#close-note").fill("Order located, customer informed.")
    expect(agent_page.locator("#close-hand-back")).to_be_checked()
    agent_page.locator("#close-submit").click()

    back_to_bot = "人工客服已结束本次服务，接下来由智能助手继续为您服务。还有其他问题可以随时问我。"
    expect(widget.notices.last).to_have_text(back_to_bot)
    expect(widget.mode).to_have_attribute("data-mode", "bot")
    expect(console.queue).to_have_count(0)
    expect(agent_page.locator("#ticket-meta")).to_contain_text("Back with the bot")

    widget.ask("什么时候发货？")
    expect(widget.replies).to_have_text([widget.replies.first.inner_text(), BOT_ANSWER])
