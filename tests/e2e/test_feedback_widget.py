"""Thumbs and the chat rating in the web widget, in real headless Chromium, checked in the store through the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from kefu.api.app import create_app
from kefu.config import load_settings
from kefu.llm.testing import ScriptedLLM
from tests.support.browser import ARTIFACTS_DIR, launch_chromium
from tests.support.live_server import live_server

pytestmark = pytest.mark.browser

QUESTION = "退货政策是什么？"
ANSWER = "您好！鹿末支持签收后 7 天无理由退货。"


@dataclass(frozen=True)
class Shop:
    """A kefu server (open mode, no operator accounts: the admin API answers without a sign-in)."""

    base_url: str

    def report(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.base_url}/v1/admin/analytics")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def feedback(self) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.base_url}/v1/admin/feedback")
        assert resp.status_code == 200, resp.text
        items: list[dict[str, Any]] = resp.json()
        return items


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    llm = ScriptedLLM(default_reply=ANSWER)
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("kefu"), llm={"backend": "testing"}, auth={"mode": "open"}
    )
    with live_server(create_app(settings, llm=llm)) as base_url:
        yield Shop(base_url)


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[str], Page]]:
    contexts: list[BrowserContext] = []

    def new_page(locale: str) -> Page:
        context = browser.new_context(locale=locale, viewport={"width": 1100, "height": 760})
        contexts.append(context)
        return context.new_page()

    yield new_page
    for context in contexts:
        context.close()


def chat_with_one_answer(page: Page, base_url: str) -> None:
    page.goto(base_url)
    expect(page.locator(".kefu-status")).to_have_attribute("data-status", "open")
    page.locator(".kefu-input").fill(QUESTION)
    page.locator(".kefu-input").press("Enter")
    expect(page.locator(".kefu-msg[data-role=assistant] .kefu-bubble")).to_have_text([ANSWER])


def test_a_thumb_on_a_reply_is_stored_and_a_second_vote_replaces_it(
    new_page: Callable[[str], Page], shop: Shop
) -> None:
    page = new_page("zh-CN")
    chat_with_one_answer(page, shop.base_url)
    reply = page.locator(".kefu-msg[data-role=assistant]")
    up = reply.get_by_role("button", name="有帮助", exact=True)
    down = reply.get_by_role("button", name="没有帮助", exact=True)

    up.click()
    expect(up).to_have_attribute("aria-pressed", "true")
    expect(reply.locator(".kefu-feedback-status")).to_have_text("感谢您的反馈！")
    down.click()
    expect(down).to_have_attribute("aria-pressed", "true")
    expect(up).to_have_attribute("aria-pressed", "false")

    message_id = reply.get_attribute("data-id")
    thumbs = [f for f in shop.feedback() if f["message_id"] == message_id]
    assert [(f["kind"], f["rating"]) for f in thumbs] == [("thumb", -1)]
    page.reload()
    expect(page.locator(".kefu-msg[data-role=assistant] .kefu-vote--down")).to_have_attribute("aria-pressed", "true")


def test_the_chat_is_rated_with_stars_and_a_comment(new_page: Callable[[str], Page], shop: Shop) -> None:
    page = new_page("en-US")
    chat_with_one_answer(page, shop.base_url)

    page.get_by_role("button", name="Rate this chat").click()
    page.get_by_role("button", name="4 stars: Satisfied").click()
    page.get_by_role("textbox", name="Comment (optional)").fill("Quick and friendly")
    page.get_by_role("button", name="Send rating").click()

    expect(page.locator(".kefu-rating-status")).to_have_text("Thank you for rating this chat!")
    screenshot(page, "feedback-widget-en.png")
    expect(page.get_by_role("button", name="4 stars: Satisfied")).to_have_attribute("aria-pressed", "true")
    ratings = [f for f in shop.feedback() if f["kind"] == "csat"]
    assert [(f["rating"], f["comment"]) for f in ratings] == [(4, "Quick and friendly")]
    assert ratings[0]["message_id"] is None


def test_the_analytics_page_shows_the_figures_in_the_browsers_language(
    new_page: Callable[[str], Page], shop: Shop
) -> None:
    page = new_page("zh-CN")
    chat_with_one_answer(page, shop.base_url)
    page.locator(".kefu-msg[data-role=assistant] .kefu-vote--up").click()
    expect(page.locator(".kefu-feedback-status")).to_have_text("感谢您的反馈！")
    report = shop.report()

    page.goto(f"{shop.base_url}/console/analytics")

    conversations = page.locator("[data-stat=conversations]")
    expect(conversations.locator("dt")).to_have_text("对话数")
    expect(conversations.locator("dd")).to_have_text(str(report["conversations"]))
    thumbs = report["thumbs"]
    expect(page.locator("[data-stat=thumbs] dd")).to_have_text(f"{thumbs['up']} / {thumbs['down']}")
    expect(page.locator("#comments tbody tr")).not_to_have_count(0)
    screenshot(page, "analytics-zh.png")


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    page.wait_for_timeout(300)  # let transitions settle before the picture
    page.screenshot(path=ARTIFACTS_DIR / name, full_page=True)
