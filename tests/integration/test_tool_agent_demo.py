"""The tool agent end to end: a stock question over POST /v1/chat, the demo backend in process, a scripted model.

Each test says what the customer sees, what reached the shop's backend (its write log) and what the model was
shown; the model's tool calls are scripted with `kefu.llm.testing.tool_call`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.errors import LLMUnavailableError
from kefu.llm.testing import ScriptedLLM, tool_call
from kefu.services import Services
from kefu.store import MessageRecord
from lumo_shop.app import create_app as create_shop_app
from tests.conftest import DEMO_SHOP, make_settings

AS_OF = "2026-11-20T15:00:00+08:00"
SHOP_TOKEN = "test-shop-token"
STOCK_QUESTION = "Sonaro Buds Pro 2 还有货吗？"
BUDS_PRO_2 = "LM-AU-001"  # 356 in stock in the demo catalogue


class _Down(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
def shop_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("LUMO_SHOP_TOKEN", SHOP_TOKEN)
    return create_shop_app(tmp_path / "shop.db", DEMO_SHOP, now="as_of", token=SHOP_TOKEN)


async def shop_writes(shop_app: FastAPI) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=shop_app),
        base_url="http://shop",
        headers={"Authorization": f"Bearer {SHOP_TOKEN}"},
    ) as client:
        response = await client.get("/admin/writes")
        response.raise_for_status()
        return list(response.json()["writes"])


class Customer:
    """One conversation with kefu, and the services behind it (to read the stored trace)."""

    def __init__(self, client: httpx.AsyncClient, services: Services) -> None:
        self.client = client
        self.services = services
        self.session_id: str | None = None

    async def say(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"user_id": "customer-1", "channel": "web", "text": text}
        if self.session_id:
            body["session_id"] = self.session_id
        response = await self.client.post("/v1/chat", json=body)
        assert response.status_code == 200, response.text
        data = dict(response.json())
        self.session_id = data["session_id"]
        return data

    async def stored(self) -> MessageRecord:
        """The last reply as stored for operators (route, trace)."""
        assert self.session_id is not None
        records = await self.services.store.list_messages(self.session_id, limit=50)
        return [r for r in records if r.role == "assistant"][-1]

    async def trace(self) -> dict[str, Any]:
        return (await self.stored()).trace


async def _customer(
    tmp_path: Path, shop_app: FastAPI, llm: ScriptedLLM, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Customer]:
    settings = make_settings(tmp_path, dialogue={"now": AS_OF})
    app = create_app(settings, llm=llm, action_transports={"shop": transport or httpx.ASGITransport(app=shop_app)})
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu") as client:
            yield Customer(client, app.state.services)


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
async def customer(tmp_path: Path, shop_app: FastAPI, llm: ScriptedLLM) -> AsyncIterator[Customer]:
    async for c in _customer(tmp_path, shop_app, llm):
        yield c


async def test_a_stock_question_is_answered_with_the_backends_real_stock(customer: Customer, llm: ScriptedLLM) -> None:
    llm.queue(tool_call("get_product", sku=BUDS_PRO_2), "有货，Sonaro Buds Pro 2 目前共有 356 件库存。")

    reply = await customer.say(STOCK_QUESTION)

    assert reply["reply"] == "有货，Sonaro Buds Pro 2 目前共有 356 件库存。"
    assert reply["intent"] == "stock_availability" and reply["error"] is None
    assert (await customer.stored()).route == "agent"
    first, second = llm.calls
    # Only the intent's read actions (and kefu's own start_flow) were offered; never a write.
    assert [t.name for t in first.options.tools] == ["get_product", "search_products", "start_flow"]
    system = first.messages[0]
    assert system.role == "system"
    assert customer.services.runner.deps.shop.policy_summary is not None
    assert customer.services.runner.deps.shop.policy_summary.zh in system.content  # the shop's written policy
    assert "LM-AU-001" in system.content  # the product the customer named, resolved by understanding
    tool_message = second.messages[-1]
    assert tool_message.role == "tool" and '"stock":356' in tool_message.content  # the backend's own number
    assert '"name_en"' not in tool_message.content  # a Chinese conversation gets the Chinese fields only
    trace = await customer.trace()
    assert trace["agent"]["decision"] == "answered"
    assert trace["agent"]["calls"] == [
        {"tool": "get_product", "args": {"sku": BUDS_PRO_2}, "ok": True, "status": 200, "attempts": 1}
    ]
    assert trace["route"]["handler"] == "tool_agent" and trace["route"]["answered_by"] == "tool_agent"
    llm.assert_complete()


async def test_an_invented_number_is_replaced_by_a_safe_reply(customer: Customer, llm: ScriptedLLM) -> None:
    llm.queue(tool_call("get_product", sku=BUDS_PRO_2), "有货，目前库存 999 件，下单即发。")

    reply = await customer.say(STOCK_QUESTION)

    assert "999" not in reply["reply"]
    assert reply["reply"] == customer.services.runner.deps.prompts.reply("agent_unsure", "zh")
    assert (await customer.stored()).route == "no_answer"  # counts towards handing off after three in a row
    trace = await customer.trace()
    assert trace["agent"]["decision"] == "ungrounded" and trace["agent"]["missing_numbers"] == ["999"]


async def test_a_question_the_agent_reads_nothing_for_goes_on_to_the_knowledge_stages(
    customer: Customer, llm: ScriptedLLM
) -> None:
    llm.queue("我们有 37 款二手车在售。", "抱歉，本店不销售二手车。")

    reply = await customer.say("你们卖二手车吗？还有货吗")

    assert reply["reply"] == "抱歉，本店不销售二手车。"  # the knowledge / LLM stages answered, not the agent
    trace = await customer.trace()
    assert trace["agent"]["decision"] == "ungrounded" and trace["agent"]["deferred_to"] == "knowledge"
    assert trace["route"]["answered_by"] == "fallthrough"
    assert not llm.calls[1].options.tools


async def test_a_tool_not_offered_is_refused_and_the_model_told_so(customer: Customer, llm: ScriptedLLM) -> None:
    llm.queue(tool_call("get_order", order_id="LM26110298"), "抱歉，我只能查询商品库存。")

    reply = await customer.say(STOCK_QUESTION)

    assert reply["reply"] == "抱歉，我只能查询商品库存。"
    refusal = llm.calls[1].messages[-1]
    assert refusal.role == "tool" and "tool_not_offered" in refusal.content
    assert "王晓雯" not in refusal.content and "空气炸锅" not in refusal.content  # nothing was read
    trace = await customer.trace()
    assert trace["agent"]["calls"][0]["error_code"] == "tool_not_offered"
    assert "attempts" not in trace["agent"]["calls"][0]  # the backend was never asked


async def test_a_write_the_model_attempts_never_reaches_the_backend(
    customer: Customer, llm: ScriptedLLM, shop_app: FastAPI
) -> None:
    llm.queue(
        tool_call("create_return", order_id="LM26110625", reason_code="no_reason"),
        tool_call("cancel_order", order_id="LM26110625", reason_code="changed_mind"),
        "我这里不能直接办理退货。",
    )

    reply = await customer.say(STOCK_QUESTION)

    assert reply["reply"] == "我这里不能直接办理退货。"
    assert await shop_writes(shop_app) == []
    trace = await customer.trace()
    assert [(c["tool"], c["error_code"]) for c in trace["agent"]["calls"]] == [
        ("create_return", "tool_not_offered"),
        ("cancel_order", "tool_not_offered"),
    ]
    assert "start_flow" in llm.calls[1].messages[-1].content  # the model is pointed at the confirmed path


async def test_the_agent_can_hand_a_change_to_its_flow_which_asks_before_writing(
    customer: Customer, llm: ScriptedLLM, shop_app: FastAPI
) -> None:
    llm.queue(tool_call("start_flow", flow="return"))

    reply = await customer.say(STOCK_QUESTION)

    assert (await customer.stored()).route == "flow" and "订单号" in reply["reply"]
    assert await shop_writes(shop_app) == []
    trace = await customer.trace()
    assert trace["agent"]["decision"] == "start_flow" and trace["agent"]["start_flow"] == "return"
    assert trace["flow"]["flow"] == "return"
    follow_up = await customer.say("LM26110625")  # the flow goes on as if it had been started by its intent
    assert "手机号" in follow_up["reply"]


async def test_a_dead_backend_gets_a_graceful_reply_and_a_recorded_error(
    tmp_path: Path, shop_app: FastAPI, llm: ScriptedLLM
) -> None:
    llm.queue(tool_call("get_product", sku=BUDS_PRO_2))
    async for customer in _customer(tmp_path, shop_app, llm, transport=_Down()):
        reply = await customer.say(STOCK_QUESTION)

        assert reply["reply"] == customer.services.runner.deps.prompts.reply("agent_unavailable", "zh")
        assert reply["error"] == "backend_unavailable"
        assert len(llm.calls) == 1  # no second guess by the model once the backend is down
        trace = await customer.trace()
        call = trace["agent"]["calls"][0]
        assert call["ok"] is False and call["error_code"] == "backend_unavailable" and call["attempts"] == 3
    llm.assert_complete()


async def test_a_failing_model_gets_a_graceful_reply_and_a_recorded_error(customer: Customer, llm: ScriptedLLM) -> None:
    llm.queue(LLMUnavailableError("model server down"))

    reply = await customer.say("Is the Sonaro Buds Pro 2 in stock?")

    assert reply["reply"] == customer.services.runner.deps.prompts.reply("agent_unavailable", "en")
    assert reply["error"] == "llm_error"
    trace = await customer.trace()
    assert trace["agent"]["decision"] == "llm_error" and "model server down" in trace["agent"]["error"]
