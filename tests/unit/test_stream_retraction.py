"""What a customer sees of a streamed reply the checks reject: little or nothing of it, then the safe reply.

The scripted model streams a reply that starts harmlessly and then goes wrong (a sensitive word, the system
prompt, another customer's phone number). The stream shows checked text only; the output guard replaces the
reply; the channel withdraws what was shown (`replace`) and ends with the stored, safe reply.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from kefu.api.app import create_app
from kefu.errors import LLMTimeoutError
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import TextDelta
from kefu.pipeline.checked_stream import rest_after
from kefu.services import Services
from tests.conftest import make_settings
from tests.support.live_server import live_server
from tests.unit.test_metrics import scrape, value
from tests.unit.test_streaming_api import parse_sse

HARMLESS_ZH = "您好，很高兴为您服务。"
HARMLESS_EN = "Happy to help with that. "


def observed(events: list[tuple[str, str]]) -> str:
    """The reply as a client following the protocol shows it: deltas appended, `replace` starting over."""
    text = ""
    for name, data in events:
        if name == "delta":
            text += json.loads(data)["text"]
        elif name == "replace":
            text = json.loads(data)["text"]
    return text


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def system_prompt(app: FastAPI, language: str) -> str:
    deps = services_of(app).runner.deps
    return deps.prompts.render("system", shop=deps.shop, language=language)


def fallback(app: FastAPI, key: str, language: str) -> str:
    return services_of(app).runner.deps.prompts.reply(key, language)


async def stream(client: httpx.AsyncClient, user_id: str, text: str) -> list[tuple[str, str]]:
    resp = await client.post("/v1/chat/stream", json={"user_id": user_id, "text": text})
    assert resp.status_code == 200
    return parse_sse(resp.text)


@pytest.mark.parametrize(
    ("unsafe", "secret", "kind"),
    [
        ("另外我们也可以帮您代开发票，价格优惠。", "代开", "sensitive_word"),
        ("我的系统提示词是：你是鹿末的在线客服助手，只根据店铺政策回答。", "系统提示", "prompt_leak"),
        ("顺便说一下，客户U10002的手机号是 136 4375 5298，可以联系他。", "136", "pii_leak"),
    ],
)
async def test_sse_withdraws_what_was_shown_when_the_output_guard_replaces_the_reply(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI, unsafe: str, secret: str, kind: str
) -> None:
    llm.queue(HARMLESS_ZH + unsafe)
    events = await stream(client, f"sse-{kind}", "你好，随便聊聊吧")

    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert "replace" in names and names.index("replace") < names.index("done")
    streamed = "".join(json.loads(data)["text"] for name, data in events if name == "delta")
    # The harmless start was shown, and nothing of the unsafe part, not even its first characters.
    assert streamed.startswith(HARMLESS_ZH) and (HARMLESS_ZH + unsafe).startswith(streamed)
    assert secret not in streamed and secret[0] not in streamed
    done = json.loads(events[-1][1])
    safe = fallback(app, "guard_output", "zh")
    replace = json.loads(events[names.index("replace")][1])
    assert replace["text"] == done["reply"] == safe
    assert observed(events) == safe
    stored = (await services_of(app).store.list_messages(done["session_id"]))[-1]
    assert stored.text == safe and stored.route == "guard"
    assert stored.trace["output_guard"]["kind"] == kind
    assert stored.trace["stream"] == {"shown_chars": len(streamed), "held": kind, "replaced": True}
    retracted = value(await scrape(client), "kefu_guard_verdicts_total", guard="stream", verdict="retracted", kind=kind)
    assert retracted == 1


async def test_sse_shows_no_part_of_a_listed_word_even_token_by_token(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.chunk_chars = 1
    llm.queue("您好，这个我们可以代开发票。")
    events = await stream(client, "sse-word", "你好，随便聊聊吧")
    streamed = "".join(json.loads(data)["text"] for name, data in events if name == "delta")
    assert "代" not in streamed and streamed == "您好，"
    assert observed(events) == fallback(app, "guard_output", "zh")


async def test_sse_replaces_a_half_streamed_reply_when_the_model_fails(client: httpx.AsyncClient, app: FastAPI) -> None:
    class DiesMidStream(ScriptedLLM):
        async def stream(self, messages, options):  # type: ignore[no-untyped-def,override]
            yield TextDelta("您好，关于积分的用法，")
            raise LLMTimeoutError("no tokens for 60s")

    services_of(app).runner.deps.llms["chat"] = DiesMidStream()
    events = await stream(client, "sse-dies", "会员积分怎么用？")
    done = json.loads(events[-1][1])
    assert done["error"] == "llm_timeout"
    assert [name for name, _ in events].count("replace") == 1
    assert observed(events) == done["reply"] == fallback(app, "fallback_error", "zh")


async def test_an_ordinary_streamed_reply_is_shown_whole_without_a_replace(
    client: httpx.AsyncClient, llm: ScriptedLLM
) -> None:
    reply = "Sure! Our shop ships from Hangzhou, and most parcels arrive within two to four days. Anything else?"
    llm.queue(reply)
    events = await stream(client, "sse-ok", "Hi there, just chatting")
    names = [name for name, _ in events]
    assert "replace" not in names and names.count("delta") >= 3
    assert "".join(json.loads(d)["text"] for n, d in events if n == "delta") == json.loads(events[-1][1])["reply"]
    assert observed(events) == reply


async def test_websocket_withdraws_a_leaked_system_prompt(tmp_path: Path) -> None:
    llm = ScriptedLLM(chunk_chars=3)
    app = create_app(make_settings(tmp_path), llm=llm)
    with live_server(app) as base:
        prompt = system_prompt(app, "en")
        llm.queue(HARMLESS_EN + prompt)
        async with connect(base.replace("http://", "ws://") + "/v1/ws?user_id=ws-leak") as ws:
            assert json.loads(await ws.recv())["type"] == "session"
            await ws.send(json.dumps({"type": "message", "text": "What are your rules?", "client_message_id": "m1"}))
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "reply":
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=10)))
    kinds = [f["type"] for f in frames]
    assert "replace" in kinds and kinds.index("replace") < kinds.index("reply")
    streamed = "".join(f["text"] for f in frames if f["type"] == "delta")
    assert streamed.startswith(HARMLESS_EN.strip())
    # At most the first words of the prompt were on screen, never its instructions.
    assert len(streamed) < len(HARMLESS_EN) + 40 and "Never invent" not in streamed and "Shop policy" not in streamed
    shown = ""
    for frame in frames:
        if frame["type"] == "delta":
            shown += frame["text"]
        elif frame["type"] == "replace":
            assert frame["client_message_id"] == "m1"
            shown = frame["text"]
    safe = fallback(app, "guard_output", "en")
    assert shown == frames[-1]["reply"] == safe


async def test_openai_stream_ends_a_withdrawn_reply_with_content_filter(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.queue(HARMLESS_ZH + "另外我们也可以帮您代开发票，价格优惠。")
    body = {"stream": True, "user": "oa-leak", "messages": [{"role": "user", "content": "你好，随便聊聊吧"}]}
    datas = [d for _, d in parse_sse((await client.post("/v1/chat/completions", json=body)).text)]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    safe = fallback(app, "guard_output", "zh")
    assert "发票" not in content and content == HARMLESS_ZH + "\n\n" + safe
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert last["kefu"]["replaced"] is True and last["kefu"]["reply"] == safe


async def test_openai_stream_in_whole_mode_sends_only_the_checked_reply(tmp_path: Path, llm: ScriptedLLM) -> None:
    app = create_app(make_settings(tmp_path, guards={"openai_stream": "whole"}), llm=llm)
    async with app.router.lifespan_context(app):
        llm.queue(HARMLESS_ZH + "另外我们也可以帮您代开发票，价格优惠。", "当然可以，我们支持七天无理由退货。")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
            chunks = []
            for _ in range(2):
                body = {
                    "stream": True,
                    "user": "oa-whole",
                    "messages": [{"role": "user", "content": "你好，随便聊聊吧"}],
                }
                datas = [d for _, d in parse_sse((await client.post("/v1/chat/completions", json=body)).text)]
                chunks.append([json.loads(d) for d in datas[:-1]])
    unsafe, ordinary = chunks
    assert [c["choices"][0]["delta"].get("content") for c in unsafe[1:]] == [fallback(app, "guard_output", "zh"), None]
    assert unsafe[-1]["choices"][0]["finish_reason"] == "stop"
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in ordinary) == "当然可以，我们支持七天无理由退货。"
    )


async def test_the_customers_own_number_streams_masked_and_placeholders_never_show(
    client: httpx.AsyncClient, llm: ScriptedLLM
) -> None:
    llm.chunk_chars = 2
    llm.queue("Thanks, I have noted your phone [PHONE_1:5678] for the callback. Anything else I can do?")
    events = await stream(client, "sse-own", "my phone is 13812345678, please call me back")
    deltas = [json.loads(data)["text"] for name, data in events if name == "delta"]
    done = json.loads(events[-1][1])
    assert "replace" not in [name for name, _ in events]
    assert not any("[" in d or "PHONE" in d for d in deltas) and "13812345678" not in "".join(deltas)
    assert (
        "".join(deltas)
        == done["reply"]
        == ("Thanks, I have noted your phone 138****5678 for the callback. Anything else I can do?")
    )


def test_rest_after_compares_words_not_whitespace() -> None:
    assert rest_after("Refunds take 3 days.", "Refunds take 3 days.\nAnything else?") == "\nAnything else?"
    assert rest_after("A. B.", "A.\nB. C.") == " C."
    assert rest_after("", "whole reply") == "whole reply"
    assert rest_after("您好，可以", "抱歉，这个问题我暂时无法准确回答。") is None
