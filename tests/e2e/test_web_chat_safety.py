"""The web widget in real headless Chromium when a streamed reply is rejected by the output guard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from kefu.api.app import create_app
from kefu.config import load_settings
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from tests.e2e.test_web_chat import Chat
from tests.support.browser import launch_chromium
from tests.support.live_server import live_server

pytestmark = pytest.mark.browser

HARMLESS = "您好，很高兴为您服务。"
UNSAFE = "另外我们也可以帮您代开发票，价格优惠，需要的话请告诉我。"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


def test_a_rejected_streamed_reply_ends_as_the_safe_reply_and_never_shows_the_unsafe_text(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Small pieces with a pause between them: the browser renders the stream as it arrives.
    llm = ScriptedLLM([HARMLESS + UNSAFE], chunk_chars=2, delay_s=0.05)
    app = create_app(load_settings(data_dir=tmp_path_factory.mktemp("kefu"), llm={"backend": "testing"}), llm=llm)
    with live_server(app) as base_url:
        services: Services = app.state.services
        safe = services.runner.deps.prompts.reply("guard_output", "zh")
        context = browser.new_context(locale="zh-CN", viewport={"width": 1100, "height": 760})
        try:
            chat = Chat.open(context.new_page(), base_url)
            chat.record_replies()

            chat.ask("你好，随便聊聊吧")

            expect(chat.replies).to_have_text([safe])
            reply = chat.page.locator(".kefu-msg[data-role=assistant]")
            expect(reply).to_have_attribute("data-replaced", "")
            shown = [texts[0] for texts in chat.recorded_replies() if texts]
            # The harmless start was on screen, then withdrawn; no part of the unsafe text ever was.
            assert HARMLESS in shown, shown
            assert not any("代" in text or "发票" in text for text in shown), shown
            chat.page.reload()
            chat.wait_until_online()
            expect(chat.messages).to_have_text(["你好，随便聊聊吧", safe])
        finally:
            context.close()
    llm.assert_complete()
