"""The web chat widget in real headless Chromium against a real kefu server (scripted LLM)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, WebSocketRoute, expect

from kefu.api.app import create_app
from kefu.config import load_settings
from kefu.llm.testing import ScriptedLLM
from tests.support.browser import ARTIFACTS_DIR, WebSocketLink, launch_chromium
from tests.support.live_server import live_server

pytestmark = pytest.mark.browser

SOCKET_URL = re.compile(r"/v1/ws\b")
RETURNS_QUESTION = "退货政策是什么？"
RETURNS_ANSWER = "您好！鹿末支持签收后 7 天无理由退货，商品及配件需保持完好，退款会在收到退货后 3 个工作日内原路退回。"
SHIPPING_QUESTION = "How long does shipping take?"
SHIPPING_ANSWER = "Orders ship within 24 hours and usually arrive in 2 to 4 days."
RECONNECT_TIMEOUT_MS = 15_000
"""Long enough for the widget's backoff (capped at 10 s) to come round after the link is restored."""


@dataclass(frozen=True)
class Shop:
    """The demo shop's kefu server and the scripted model behind it."""

    base_url: str
    llm: ScriptedLLM

    def answer_with(self, text: str) -> None:
        self.llm.default_reply = text


class Chat:
    """The widget on a page, as the customer sees it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.launcher = page.locator(".kefu-launcher")
        self.input = page.locator(".kefu-input")
        self.status = page.locator(".kefu-status")
        self.banner = page.locator(".kefu-banner")
        self.greeting = page.locator(".kefu-greeting")
        self.messages = page.locator(".kefu-msg[data-role] .kefu-bubble")
        self.customer_messages = page.locator(".kefu-msg[data-role=user] .kefu-bubble")
        self.replies = page.locator(".kefu-msg[data-role=assistant] .kefu-bubble")
        self.citations = page.locator(".kefu-msg[data-role=assistant] .kefu-sources li")
        self.notices = page.locator(".kefu-notice")

    @classmethod
    def open(cls, page: Page, base_url: str) -> Chat:
        page.goto(base_url)
        chat = cls(page)
        chat.wait_until_online()
        return chat

    def wait_until_online(self) -> None:
        expect(self.status).to_have_attribute("data-status", "open")

    def ask(self, text: str) -> None:
        self.input.fill(text)
        self.input.press("Enter")

    def record_replies(self) -> None:
        """From now on, note the texts of all bot replies on screen after every change to the log."""
        self.page.evaluate(
            """() => {
              const root = document.querySelector("[data-kefu-widget]").shadowRoot;
              window.kefuReplySnapshots = [];
              new MutationObserver(() => {
                const bubbles = root.querySelectorAll(".kefu-msg[data-role=assistant] .kefu-bubble");
                window.kefuReplySnapshots.push(Array.from(bubbles, (bubble) => bubble.textContent));
              }).observe(root, { subtree: true, childList: true, characterData: true });
            }"""
        )

    def recorded_replies(self) -> list[list[str]]:
        """One entry per change to the log: the texts of the bot replies on screen at that moment."""
        snapshots: list[list[str]] = self.page.evaluate("() => window.kefuReplySnapshots")
        return snapshots

    def screenshot(self, name: str) -> Path:
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        path = ARTIFACTS_DIR / name
        self.page.screenshot(path=path)
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    llm = ScriptedLLM(default_reply=RETURNS_ANSWER, chunk_chars=3)
    settings = load_settings(data_dir=tmp_path_factory.mktemp("kefu"), llm={"backend": "testing"})
    with live_server(create_app(settings, llm=llm)) as base_url:
        yield Shop(base_url, llm)


@pytest.fixture
def new_page(browser: Browser, shop: Shop) -> Iterator[Callable[[str], Page]]:
    """Pages in fresh browser profiles (new visitor: empty localStorage) with the given locale."""
    contexts: list[BrowserContext] = []

    def new_page(locale: str) -> Page:
        context = browser.new_context(locale=locale, viewport={"width": 1100, "height": 760})
        contexts.append(context)
        return context.new_page()

    shop.answer_with(RETURNS_ANSWER)
    yield new_page
    for context in contexts:
        context.close()


def test_chinese_question_gets_a_streamed_reply(new_page: Callable[[str], Page], shop: Shop) -> None:
    chat = Chat.open(new_page("zh-CN"), shop.base_url)
    chat.record_replies()

    chat.ask(RETURNS_QUESTION)

    expect(chat.customer_messages).to_have_text([RETURNS_QUESTION])
    expect(chat.replies).to_have_text([RETURNS_ANSWER])
    partial = [texts[0] for texts in chat.recorded_replies() if texts and texts[0] not in ("", RETURNS_ANSWER)]
    assert len(partial) > 1, "the reply did not grow delta by delta"
    assert all(RETURNS_ANSWER.startswith(text) for text in partial), partial
    chat.page.wait_for_timeout(300)  # let the panel's transitions settle before the picture
    chat.screenshot("web-chat-zh.png")


def test_ui_speaks_chinese_under_a_chinese_browser(new_page: Callable[[str], Page], shop: Shop) -> None:
    chat = Chat.open(new_page("zh-CN"), shop.base_url)

    expect(chat.greeting).to_have_text("您好！我是智能客服，有什么可以帮您？")
    expect(chat.status).to_have_text("在线")
    expect(chat.input).to_have_attribute("placeholder", "请输入您的问题…")
    expect(chat.launcher).to_have_attribute("aria-label", "关闭对话")


def test_ui_speaks_english_under_an_english_browser(new_page: Callable[[str], Page], shop: Shop) -> None:
    shop.answer_with(SHIPPING_ANSWER)
    chat = Chat.open(new_page("en-US"), shop.base_url)

    expect(chat.greeting).to_have_text("Hi! I'm the virtual assistant. How can I help you today?")
    expect(chat.status).to_have_text("Online")
    expect(chat.input).to_have_attribute("placeholder", "Type your question…")
    expect(chat.input).to_have_attribute("maxlength", "4000")
    chat.input.fill("How long does shipping take?")
    chat.input.press("Shift+Enter")
    chat.input.press_sequentially("To Hong Kong")
    expect(chat.customer_messages).to_have_count(0)
    chat.input.press("Enter")
    expect(chat.customer_messages).to_have_text(["How long does shipping take?\nTo Hong Kong"])
    expect(chat.replies).to_have_text([SHIPPING_ANSWER])


def test_reload_restores_the_conversation(new_page: Callable[[str], Page], shop: Shop) -> None:
    page = new_page("zh-CN")
    chat = Chat.open(page, shop.base_url)
    chat.ask(RETURNS_QUESTION)
    expect(chat.replies).to_have_count(1)
    chat.ask("定制刻字的手机壳可以退吗？")
    expect(chat.replies).to_have_count(2)

    page.reload()
    chat.wait_until_online()

    expect(chat.messages).to_have_text([RETURNS_QUESTION, RETURNS_ANSWER, "定制刻字的手机壳可以退吗？", RETURNS_ANSWER])


def test_message_typed_while_disconnected_is_delivered_once_after_reconnect(
    new_page: Callable[[str], Page], shop: Shop
) -> None:
    page = new_page("en-US")
    link = WebSocketLink(page, SOCKET_URL)
    chat = Chat.open(page, shop.base_url)

    link.cut()
    expect(chat.status).to_have_text("Reconnecting…")
    expect(chat.banner).to_be_visible()
    chat.ask(SHIPPING_QUESTION)
    expect(page.locator(".kefu-msg[data-role=user] .kefu-meta")).to_have_text("Waiting to send")
    link.restore()

    expect(chat.replies).to_have_text([RETURNS_ANSWER], timeout=RECONNECT_TIMEOUT_MS)
    expect(chat.customer_messages).to_have_text([SHIPPING_QUESTION])
    expect(chat.banner).to_be_hidden()
    assert link.connections == 2

    page.reload()
    chat.wait_until_online()
    expect(chat.messages).to_have_text([SHIPPING_QUESTION, RETURNS_ANSWER])


def test_message_queued_before_a_reload_is_sent_after_it(new_page: Callable[[str], Page], shop: Shop) -> None:
    page = new_page("zh-CN")
    link = WebSocketLink(page, SOCKET_URL)
    chat = Chat.open(page, shop.base_url)
    link.cut()
    chat.ask(RETURNS_QUESTION)
    expect(page.locator(".kefu-msg[data-role=user] .kefu-meta")).to_have_text("等待发送")

    page.reload()
    expect(page.locator(".kefu-msg[data-role=user] .kefu-meta")).to_have_text("等待发送")
    link.restore()

    expect(chat.messages).to_have_text([RETURNS_QUESTION, RETURNS_ANSWER], timeout=RECONNECT_TIMEOUT_MS)


def test_reply_lost_with_the_connection_is_shown_once_after_reconnect(
    new_page: Callable[[str], Page], shop: Shop
) -> None:
    page = new_page("zh-CN")
    link = WebSocketLink(page, SOCKET_URL)
    chat = Chat.open(page, shop.base_url)
    # The server finishes the turn, but the connection drops before its final `reply` event arrives:
    # the page has a half-streamed bubble, the server has the stored reply.
    link.cut_at(lambda event: event["type"] == "reply")
    chat.record_replies()

    chat.ask(RETURNS_QUESTION)
    expect(chat.status).to_have_attribute("data-status", "reconnecting")
    link.restore()

    expect(chat.status).to_have_attribute("data-status", "open", timeout=RECONNECT_TIMEOUT_MS)
    expect(chat.messages).to_have_text([RETURNS_QUESTION, RETURNS_ANSWER])
    assert max(len(texts) for texts in chat.recorded_replies()) == 1, "the reply was shown twice"
    page.reload()
    chat.wait_until_online()
    expect(chat.messages).to_have_text([RETURNS_QUESTION, RETURNS_ANSWER])


def test_citations_handoff_and_agent_messages_are_shown(new_page: Callable[[str], Page], shop: Shop) -> None:
    """Plays the server's part: the real pipeline has no retrieval or human agents yet."""
    page = new_page("en-US")
    page.route(
        re.compile(r"/v1/sessions/[^/]+/messages$"),
        lambda route: route.fulfill(json={"session_id": "s-1", "messages": []}),
    )
    page.route_web_socket(SOCKET_URL, _scripted_server)
    chat = Chat.open(page, shop.base_url)

    chat.ask("Can I return opened earbuds?")
    expect(chat.replies).to_have_text([EARBUDS_ANSWER])
    expect(chat.page.locator(".kefu-sources-label")).to_have_text("Sources")
    expect(chat.citations).to_have_text(["Returns policy", "Audio FAQ", "Not a link"])
    expect(chat.citations.locator("a")).to_have_count(1)
    expect(chat.citations.locator("a")).to_have_attribute("href", f"{shop.base_url}/kb/returns")

    chat.ask("I'd like to talk to a human agent, please.")
    expect(chat.notices).to_have_text(["Connecting you to a human agent…", "Mia from Lumo has joined"])
    agent_message = page.locator(".kefu-msg[data-role=agent]")
    expect(agent_message.locator(".kefu-sender")).to_have_text("Agent · Mia")
    expect(agent_message.locator(".kefu-bubble")).to_have_text(AGENT_GREETING)
    chat.page.wait_for_timeout(300)  # let the panel's transitions settle before the picture
    chat.screenshot("web-chat-agent-en.png")


EARBUDS_ANSWER = "Yes: opened earbuds can be returned within 7 days if the ear tips and accessories are complete."
AGENT_GREETING = "Hi, I'm Mia. Let me check that for you."


def _scripted_server(socket: WebSocketRoute) -> None:
    """A stand-in for the kefu WebSocket: a cited answer first, then a handoff to a human agent."""
    answered = 0

    def send(**event: object) -> None:
        socket.send(json.dumps(event))

    def reply(client_message_id: str, text: str, *, citations: list[dict[str, str]], handoff: bool) -> None:
        nonlocal answered
        answered += 1
        send(type="ack", client_message_id=client_message_id, message_id=f"q-{answered}")
        send(type="typing")
        send(
            type="reply",
            client_message_id=client_message_id,
            session_id="s-1",
            message_id=f"a-{answered}",
            reply=text,
            citations=citations,
            intent=None,
            handoff=handoff,
            latency_ms=3,
            error=None,
        )

    def on_message(raw: str | bytes) -> None:
        message = json.loads(raw)
        if message["type"] != "message":
            return
        if answered == 0:
            citations = [
                {"title": "Returns policy", "source": "policies/returns.md", "url": "/kb/returns"},
                {"title": "Audio FAQ", "source": "faq/audio.csv"},
                {"title": "Not a link", "source": "x", "url": "javascript:alert(1)"},
            ]
            reply(message["client_message_id"], EARBUDS_ANSWER, citations=citations, handoff=False)
            return
        reply(message["client_message_id"], "I'll connect you with a colleague.", citations=[], handoff=True)
        send(type="handoff", status="queued", message=None)
        send(type="handoff", status="assigned", message="Mia from Lumo has joined")
        send(type="agent_message", message_id="g-1", text=AGENT_GREETING, agent_name="Mia", created_at="2026-11-01")

    socket.on_message(on_message)
    send(type="session", session_id="s-1", owner="bot")
