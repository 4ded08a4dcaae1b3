"""The tool agent on its own: tools offered, arguments checked, the identity guardrail, limits, failures.

The model is scripted (`kefu.llm.testing`); the actions are the demo shop's, over its real backend in process,
so what the agent reads is what the shop would answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kefu.config import AgentSettings
from kefu.connectors import ActionResult, Actions, ActionSpec, load_actions
from kefu.dialogue.agent import AgentRequest, ToolAgent, intent_tools
from kefu.dialogue.flows import load_flows
from kefu.dialogue.guardrail import check_answer_identity, check_identity
from kefu.dialogue.state import Identity
from kefu.errors import DataFileError, LLMTimeoutError
from kefu.llm.testing import ScriptedLLM, tool_call, tool_calls
from kefu.llm.types import Message
from kefu.prompts import PromptLibrary
from kefu.shop import load_shop
from kefu.understanding.catalogue import load_catalogue
from kefu.understanding.types import Entity
from lumo_shop.app import create_app as create_shop_app
from tests.conftest import DEMO_SHOP

SHOP_TOKEN = "test-shop-token"
MINE = "LM26110625"  # U10048's order (phone 13156780827), ANC earbuds
THEIRS = "LM26110298"  # U10001's order: 王晓雯, an air fryer, parcel JDV094880697195
THEIR_DATA = ("王晓雯", "空气炸锅", "Air Fryer", "JDV094880697195", "U10001")
ME = Identity(user_id="U10048", orders=[MINE])
STOCK = "stock_availability"
ORDERS = "order_question"


@pytest.fixture
async def actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Actions]:
    monkeypatch.setenv("LUMO_SHOP_TOKEN", SHOP_TOKEN)
    shop = create_shop_app(tmp_path / "shop.db", DEMO_SHOP, now="as_of", token=SHOP_TOKEN)
    loaded = load_actions(DEMO_SHOP / "actions.yaml", transports={"shop": httpx.ASGITransport(app=shop)})
    yield loaded
    await loaded.aclose()


def make_agent(actions: Actions, **settings: Any) -> ToolAgent:
    def specs(*names: str) -> tuple[ActionSpec, ...]:
        found = tuple(actions.get(n) for n in names)
        assert all(found)
        return tuple(s for s in found if s is not None)

    tools = {STOCK: specs("get_product", "search_products"), ORDERS: specs("get_order", "get_tracking")}
    return ToolAgent(
        tools,
        actions,
        PromptLibrary(),
        load_shop(DEMO_SHOP),
        AgentSettings(**settings),
        flows=load_flows(DEMO_SHOP / "flows", actions),
    )


def ask(text: str, intent: str = STOCK, **extra: Any) -> AgentRequest:
    return AgentRequest(intent=intent, text=text, language=extra.pop("language", "zh"), **extra)


# ---------------------------------------------------------------- what the model is given


async def test_the_instructions_carry_the_policy_the_language_and_the_verified_orders(actions: Actions) -> None:
    agent, llm = make_agent(actions), ScriptedLLM(["您好，请问您想查询哪件商品？"])
    product = Entity("product", "LM-AU-001", "Buds Pro 2", attrs={"name_en": "Sonaro Buds Pro 2 ANC True Wireless"})

    outcome = await agent.run(ask("is it in stock?", language="en", identity=ME, entities=[product]), llm)

    assert outcome.decision == "answered"
    (call,) = llm.calls
    system = call.messages[0].content
    policy = load_shop(DEMO_SHOP).policy_summary
    assert policy is not None and policy.en in system and policy.zh not in system
    assert "Answer the customer in English" in system
    assert f"Orders verified as this customer's: {MINE}." in system
    assert "product: LM-AU-001 (Sonaro Buds Pro 2 ANC True Wireless)" in system
    tools = {t.name: t for t in call.options.tools}
    assert list(tools) == ["get_product", "search_products", "start_flow"]
    assert tools["get_product"].parameters == {
        "type": "object",
        "properties": {"sku": {"type": "string"}},
        "required": ["sku"],
        "additionalProperties": False,
    }
    assert "return" in tools["start_flow"].parameters["properties"]["flow"]["enum"]
    assert outcome.prompt == list(call.messages)


async def test_no_flow_can_be_started_while_one_is_open_and_none_when_switched_off(actions: Actions) -> None:
    llm = ScriptedLLM(default_reply="好的")
    await make_agent(actions).run(ask("还有货吗", flow_active=True), llm)
    await make_agent(actions, start_flows=False).run(ask("还有货吗"), llm)
    assert [[t.name for t in c.options.tools] for c in llm.calls] == [["get_product", "search_products"]] * 2
    assert "我要退货" in llm.calls[1].messages[0].content  # without start_flow the customer is told what to say


async def test_history_comes_between_the_instructions_and_the_message(actions: Actions) -> None:
    llm = ScriptedLLM(["有的。"])
    history = [Message("user", "Vela X7 怎么样"), Message("assistant", "Vela X7 是我们的旗舰手机。")]
    await make_agent(actions).run(ask("蓝色的还有吗", history=history), llm)
    roles = [m.role for m in llm.calls[0].messages]
    assert roles == ["system", "user", "assistant", "user"]


# ---------------------------------------------------------------- reading through the tools


async def test_a_read_returns_the_backends_data_in_the_customers_language(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("get_product", sku="LM-AU-001"), "Yes, 356 are in stock."])

    outcome = await make_agent(actions).run(ask("Is LM-AU-001 in stock?", language="en"), llm)

    assert outcome.decision == "answered" and outcome.reply == "Yes, 356 are in stock."
    result = llm.calls[1].messages[-1]
    assert result.role == "tool" and result.tool_call_id == llm.calls[1].messages[-2].tool_calls[0].id
    assert '"stock":356' in result.content and '"name_en"' in result.content and '"name_zh"' not in result.content
    assert [c.as_trace() for c in outcome.calls] == [
        {"tool": "get_product", "args": {"sku": "LM-AU-001"}, "ok": True, "status": 200, "attempts": 1}
    ]
    assert outcome.rounds == 2 and outcome.model == "scripted"


async def test_a_business_error_goes_back_to_the_model_which_may_search_instead(actions: Actions) -> None:
    llm = ScriptedLLM(
        [
            tool_call("get_product", sku="LM-XX-999"),
            tool_call("search_products", q="空气炸锅"),
            "Kumo 可视空气炸锅 5.5L 有货，库存 320 件。",
        ]
    )

    outcome = await make_agent(actions).run(ask("空气炸锅有货吗"), llm)

    assert outcome.decision == "answered" and "320" in outcome.reply
    assert "product_not_found" in llm.calls[1].messages[-1].content
    assert [(c.tool, c.ok, c.error_code) for c in outcome.calls] == [
        ("get_product", False, "product_not_found"),
        ("search_products", True, None),
    ]


async def test_a_tool_not_offered_is_refused_without_asking_the_backend(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("get_order", order_id=MINE), tool_call("create_return", order_id=MINE), "好的"])

    outcome = await make_agent(actions).run(ask("还有货吗", identity=ME), llm)

    assert [(c.tool, c.error_code, c.attempts) for c in outcome.calls] == [
        ("get_order", "tool_not_offered", 0),
        ("create_return", "tool_not_offered", 0),
    ]
    assert "not one of your tools" in llm.calls[1].messages[-1].content
    assert "start_flow" in llm.calls[2].messages[-1].content  # a write: pointed at the confirmed path


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"sku": "LM-AU-001", "order_id": MINE}, "unknown argument(s) order_id"),
        ({}, "missing argument(s) sku"),
        ({"sku": ["LM-AU-001"]}, "sku must be a string"),
        ({"sku": "x" * 300}, "sku is too long"),
    ],
)
async def test_invalid_arguments_are_refused(actions: Actions, arguments: dict[str, Any], problem: str) -> None:
    llm = ScriptedLLM([tool_calls(("get_product", arguments)), "请问是哪件商品？"])

    outcome = await make_agent(actions).run(ask("还有货吗"), llm)

    (call,) = outcome.calls
    assert call.error_code == "invalid_arguments" and problem in call.message and call.attempts == 0
    assert problem in llm.calls[1].messages[-1].content


# ---------------------------------------------------------------- the identity guardrail


async def test_another_customers_order_is_refused_and_nothing_of_it_is_said(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("get_order", order_id=THEIRS), f"订单 {THEIRS} 是王晓雯的空气炸锅，已签收。"])

    outcome = await make_agent(actions).run(ask(f"{THEIRS} 买的什么", intent=ORDERS, identity=ME), llm)

    assert outcome.decision == "not_verified"
    assert outcome.reply == PromptLibrary().reply("agent_not_verified_order", "zh").format(order_id=THEIRS)
    assert not any(secret in outcome.reply for secret in THEIR_DATA)
    assert len(llm.calls) == 1  # the model never got a second turn, let alone the order's data
    (call,) = outcome.calls
    assert call.error_code == "not_verified" and call.attempts == 0  # the backend was never asked
    assert (
        outcome.as_trace()["calls"][0]["message"]
        == f"refused get_order: order_id {THEIRS} is not verified for this customer"
    )


async def test_without_verification_even_the_customers_own_order_is_refused(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("get_order", order_id=MINE)])
    outcome = await make_agent(actions).run(ask(f"Is {MINE} shipped?", intent=ORDERS, language="en"), llm)
    assert outcome.decision == "not_verified" and f'"track order {MINE}"' in outcome.reply


async def test_a_verified_order_is_read(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("get_order", order_id=MINE), "您的订单已签收。"])
    outcome = await make_agent(actions).run(ask(f"{MINE} 到了吗", intent=ORDERS, identity=ME), llm)
    assert outcome.decision == "answered" and outcome.reply == "您的订单已签收。"
    assert outcome.calls[0].ok and '"status":"delivered"' in llm.calls[1].messages[-1].content


async def test_a_parcel_of_someone_elses_order_is_dropped_unread(actions: Actions) -> None:
    """get_tracking takes no order number; its answer names the order, and that order is not this customer's."""
    llm = ScriptedLLM([tool_call("get_tracking", tracking_number="JDV094880697195"), "包裹已签收。"])

    outcome = await make_agent(actions).run(ask("JDV094880697195 到哪了", intent=ORDERS, identity=ME), llm)

    assert outcome.decision == "not_verified" and THEIRS in outcome.reply
    assert len(llm.calls) == 1
    (call,) = outcome.calls
    assert call.error_code == "not_verified" and call.attempts == 1  # asked, but the answer went no further


def test_the_guardrail_verdicts() -> None:
    spec = ActionSpec("get_order", "read", "shop", params=("order_id",), identity_params=("order_id",))
    assert check_identity(spec, {"order_id": MINE}, ME).allowed
    refused = check_identity(spec, {"order_id": MINE.lower()}, ME)  # exactly the verified value, or nothing
    assert not refused.allowed and refused.field == "order_id"
    assert not check_identity(spec, {"order_id": MINE}, None).allowed
    assert check_answer_identity({"sku": "LM-AU-001"}, None, owner_field="user_id").allowed
    assert check_answer_identity({"order_id": MINE, "user_id": "U10048"}, ME, owner_field="user_id").allowed
    assert not check_answer_identity({"user_id": "U10001"}, ME, owner_field="user_id").allowed


# ---------------------------------------------------------------- limits and failures


async def test_the_last_request_offers_no_tools_and_a_model_that_keeps_calling_gets_no_answer(
    actions: Actions,
) -> None:
    calls = [tool_call("get_product", sku="LM-AU-001") for _ in range(3)]
    llm = ScriptedLLM([*calls, tool_call("get_product", sku="LM-AU-001")])

    outcome = await make_agent(actions, max_tool_rounds=3).run(ask("还有货吗"), llm)

    assert [bool(c.options.tools) for c in llm.calls] == [True, True, True, False]
    assert outcome.decision == "too_many_rounds" and not outcome.resolved
    assert outcome.reply == PromptLibrary().reply("agent_unsure", "zh")
    assert len(outcome.calls) == 3


async def test_calls_beyond_the_per_request_limit_are_refused(actions: Actions) -> None:
    many = tool_calls(*[("get_product", {"sku": f"LM-AU-00{i}"}) for i in range(1, 5)])
    llm = ScriptedLLM([many, "都有货。"])

    outcome = await make_agent(actions, max_calls_per_round=3).run(ask("这几款有货吗"), llm)

    assert [c.error_code for c in outcome.calls] == [None, None, None, "too_many_calls"]
    assert [m.role for m in llm.calls[1].messages[-4:]] == ["tool"] * 4  # every call is answered


async def test_an_unknown_flow_is_refused(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("start_flow", flow="refund_everything"), "好的"])
    outcome = await make_agent(actions).run(ask("还有货吗"), llm)
    assert outcome.start_flow is None and outcome.calls[0].error_code == "invalid_arguments"


async def test_an_empty_answer_is_not_shown(actions: Actions) -> None:
    outcome = await make_agent(actions).run(ask("还有货吗"), ScriptedLLM(["  "]))
    assert outcome.decision == "no_answer" and outcome.reply == PromptLibrary().reply("agent_unsure", "zh")
    assert outcome.defer_to_knowledge  # nothing was read: the knowledge stages get their turn


async def test_an_ungrounded_answer_after_a_read_is_not_deferred(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("get_product", sku="LM-AU-001"), "还剩 37 件。"])
    outcome = await make_agent(actions).run(ask("还有货吗"), llm)
    assert outcome.decision == "ungrounded" and outcome.missing_numbers == ("37",)
    assert not outcome.defer_to_knowledge and outcome.reply == PromptLibrary().reply("agent_unsure", "zh")


async def test_a_model_failure_midway_is_an_apology_with_the_error_recorded(actions: Actions) -> None:
    llm = ScriptedLLM([tool_call("get_product", sku="LM-AU-001"), LLMTimeoutError("no answer in 60 s")])

    outcome = await make_agent(actions).run(ask("Is LM-AU-001 in stock?", language="en"), llm)

    assert outcome.decision == "llm_error" and outcome.error_code == "llm_error"
    assert outcome.reply == PromptLibrary().reply("agent_unavailable", "en")
    assert outcome.error is not None and "no answer in 60 s" in outcome.error
    assert outcome.as_trace()["calls"][0]["ok"] is True  # what happened before the failure stays on record


async def test_a_connector_that_raises_is_a_backend_failure_not_a_crash(actions: Actions) -> None:
    class Broken:
        name = "shop"

        async def call(self, spec: ActionSpec, args: dict[str, Any], *, idempotency_key: str | None) -> ActionResult:
            raise KeyError("path parameter")

        async def aclose(self) -> None:
            return None

    broken = Actions(actions.specs, {"shop": Broken()})
    outcome = await make_agent(broken).run(ask("还有货吗"), ScriptedLLM([tool_call("get_product", sku="LM-AU-001")]))
    assert outcome.decision == "backend_unavailable" and outcome.error_code == "backend_unavailable"
    assert outcome.calls[0].error_code == "backend_error"


# ---------------------------------------------------------------- intents.yaml `tools:`

_INTENTS = """\
version: 1
intents:
  - name: stock_availability
    description: {{zh: 库存, en: stock}}
    handler: {handler}
    tools: {tools}
    examples: {{zh: [还有货吗, 有货吗], en: ["in stock?"]}}
"""


def _catalogue_file(tmp_path: Path, tools: str, handler: str = "tool_agent") -> Path:
    path = tmp_path / "intents.yaml"
    path.write_text(_INTENTS.format(tools=tools, handler=handler), encoding="utf-8")
    return path


def test_tools_are_checked_against_the_actions(tmp_path: Path, actions: Actions) -> None:
    path = _catalogue_file(tmp_path, "[get_product, search_products]")
    tools = intent_tools(load_catalogue(path), actions, source=path)
    assert [s.name for s in tools["stock_availability"]] == ["get_product", "search_products"]


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ("[get_product, get_stock]", "intent 'stock_availability' names action 'get_stock', which actions.yaml"),
        ("[get_product, create_return]", "tools may only be read actions; writes go through a flow"),
        ("[start_flow]", "'start_flow' is kefu's own tool"),
    ],
)
def test_a_wrong_tool_stops_start_up_with_the_file_and_line(
    tmp_path: Path, actions: Actions, tools: str, message: str
) -> None:
    path = _catalogue_file(tmp_path, tools)
    with pytest.raises(DataFileError) as caught:
        intent_tools(load_catalogue(path), actions, source=path)
    assert str(caught.value).startswith(f"{path}:6: intents.0.tools.")
    assert message in str(caught.value)


def test_tools_belong_to_tool_agent_intents_only(tmp_path: Path) -> None:
    path = _catalogue_file(tmp_path, "[get_product]", handler="knowledge")
    with pytest.raises(DataFileError, match="only a tool_agent handler uses them"):
        load_catalogue(path)


def test_the_demo_catalogue_gives_the_stock_intent_its_tools(actions: Actions) -> None:
    catalogue = load_catalogue(DEMO_SHOP / "intents.yaml")
    tools = intent_tools(catalogue, actions, source=DEMO_SHOP / "intents.yaml")
    assert {name: [s.name for s in specs] for name, specs in tools.items()} == {
        "stock_availability": ["get_product", "search_products"]
    }


def test_editing_tools_does_not_retrain_the_classifier(tmp_path: Path) -> None:
    with_tools = load_catalogue(_catalogue_file(tmp_path, "[get_product]"))
    without = load_catalogue(_catalogue_file(tmp_path, "[]"))
    assert with_tools.fingerprint() == without.fingerprint()
