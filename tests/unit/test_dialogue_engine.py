"""The flow engine turn by turn, as a customer experiences it: what kefu says, and what reaches the shop.

The shop is a Python connector over `SHOP` (functions of this module named in actions.yaml), so every call the
engine makes — and every write — is recorded here without HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kefu.connectors import load_actions
from kefu.connectors.python import ActionFailed
from kefu.dialogue.engine import FlowEngine, FlowOutcome, FlowTurn
from kefu.dialogue.flows import FlowLibrary, load_flows
from kefu.dialogue.state import SessionDialogue
from kefu.language import Language
from kefu.understanding.types import Entity

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=timezone(timedelta(hours=8)))

ACTIONS = """\
connectors:
  shop:
    type: python
actions:
  verify_identity:
    connector: shop
    kind: read
    function: tests.unit.test_dialogue_engine:verify_identity
    params: [order_id, phone]
  get_order:
    connector: shop
    kind: read
    function: tests.unit.test_dialogue_engine:get_order
    params: [order_id]
    identity_params: [order_id]
  create_return:
    connector: shop
    kind: write
    function: tests.unit.test_dialogue_engine:create_return
    params: [order_id, reason_code]
    identity_params: [order_id]
"""

FLOWS = """\
definitions:
  not_found: &not_found {reply: {zh: "没有找到订单 {{ slots.order_id }}。", en: No such order.}, clear: [order_id]}
flows:
  - name: return
    description: {zh: 退货申请, en: return request}
    triggers: [{intent: return_request}]
    slots:
      order_id: {entity: order_number, prompt: {zh: 请提供订单号, en: "Your order number?"}, max_attempts: 2}
      reason:
        choices: {no_reason: {zh: [不想要], en: [changed my mind]}, quality_issue: {zh: [质量], en: [broken]}}
        prompt: {zh: 退货原因是？, en: "Why are you returning it?"}
        max_attempts: 2
    steps:
      - {id: ask_order, collect: order_id}
      - {id: verify_owner, verify: order_id, on_error: {order_not_found: *not_found}}
      - {id: load_order, call: get_order, with: {order_id: "{{ slots.order_id }}"}, save_as: order}
      - {id: ask_reason, collect: reason}
      - id: confirm
        confirm: {zh: "确认为订单 {{ slots.order_id }} 提交退货吗？", en: "Submit a return for {{ slots.order_id }}?"}
      - id: submit
        call: create_return
        with: {order_id: "{{ slots.order_id }}", reason_code: "{{ slots.reason }}"}
        save_as: after_sale
        on_error:
          outside_return_window:
            reply: {zh: "无法退货：{{ error.message }}", en: "Can't: {{ error.message }}"}
            end: true
      - {id: done, reply: {zh: "已提交，服务单号 {{ after_sale.id }}", en: "Filed: {{ after_sale.id }}"}, end: true}

  - name: order_status
    description: {zh: 订单查询, en: order status}
    triggers: [{intent: order_status}]
    slots:
      order_id: {entity: order_number, prompt: {zh: 请提供订单号, en: "Your order number?"}}
    steps:
      - {id: ask_order, collect: order_id}
      - {id: verify_owner, verify: order_id}
      - {id: load_order, call: get_order, with: {order_id: "{{ slots.order_id }}"}, save_as: order}
      - id: tell
        reply: {zh: "订单 {{ order.order_id }} 状态：{{ order.status }}", en: "{{ order.status }}"}
        end: true

  - name: refund_status
    description: {zh: 退款查询, en: refund status}
    triggers: [{intent: refund_status}]
    slots:
      order_id: {entity: order_number, prompt: {zh: 请提供订单号, en: "Your order number?"}}
    steps:
      - {id: ask_order, collect: order_id}
      - {id: verify_owner, verify: order_id}
      - {id: load_order, call: get_order, with: {order_id: "{{ slots.order_id }}"}, save_as: order}
      - {id: tell, reply: {zh: "退款 {{ order.refund.amount | money }}", en: "{{ order.refund.amount }}"}, end: true}

  - name: peek
    description: {zh: 偷看订单, en: peek}
    triggers: [{intent: peek}]
    slots:
      order_id: {entity: order_number, prompt: {zh: 请提供订单号, en: "Your order number?"}}
    steps:
      - {id: ask_order, collect: order_id}
      - {id: load_order, call: get_order, with: {order_id: "{{ slots.order_id }}"}, save_as: order}
      - {id: tell, reply: {zh: "状态：{{ order.status }}", en: "{{ order.status }}"}, end: true}
"""


@dataclass
class Shop:
    """The shop's backend: two customers' orders, identity checks, and a write log that honours idempotency keys."""

    orders: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "LM26110625": {"order_id": "LM26110625", "user_id": "U1", "phone": "13800001234", "status": "已签收"},
            "LM26110737": {"order_id": "LM26110737", "user_id": "U1", "phone": "13800001234", "status": "已发货"},
            "LM26110999": {"order_id": "LM26110999", "user_id": "U2", "phone": "13900005678", "status": "已签收"},
        }
    )
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    returns: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency key → the return it created: what the shop actually did."""
    broken: bool = False
    refuse_returns: str | None = None


SHOP = Shop()


def verify_identity(order_id: str, phone: str) -> dict[str, Any]:
    SHOP.calls.append(("verify_identity", {"order_id": order_id}))
    order = SHOP.orders.get(order_id)
    if order is None:
        return {"verified": False, "reason": "order_not_found"}
    if phone in (order["phone"], order["phone"][-4:]):
        return {"verified": True, "user_id": order["user_id"]}
    return {"verified": False, "reason": "mismatch"}


def get_order(order_id: str) -> dict[str, Any]:
    SHOP.calls.append(("get_order", {"order_id": order_id}))
    if SHOP.broken:
        raise ConnectionResetError("order db at 10.0.0.7 reset the connection")
    order = SHOP.orders.get(order_id)
    if order is None:
        raise ActionFailed("order_not_found", f"no order {order_id}")
    return {k: v for k, v in order.items() if k != "phone"}


def create_return(order_id: str, reason_code: str, idempotency_key: str) -> dict[str, Any]:
    SHOP.calls.append(("create_return", {"order_id": order_id, "reason_code": reason_code}))
    if SHOP.refuse_returns is not None:
        raise ActionFailed("outside_return_window", SHOP.refuse_returns)
    if idempotency_key not in SHOP.returns:
        SHOP.returns[idempotency_key] = {
            "id": f"AS{len(SHOP.returns) + 1}",
            "order_id": order_id,
            "reason": reason_code,
        }
    return {k: v for k, v in SHOP.returns[idempotency_key].items()}


@pytest.fixture(autouse=True)
def _fresh_shop() -> Iterator[None]:
    global SHOP
    SHOP = Shop()
    yield


@pytest.fixture
def library(tmp_path: Path) -> FlowLibrary:
    (tmp_path / "actions.yaml").write_text(ACTIONS, encoding="utf-8")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "orders.yaml").write_text(FLOWS, encoding="utf-8")
    return load_flows(tmp_path / "flows", load_actions(tmp_path / "actions.yaml"))


@pytest.fixture
def engine(library: FlowLibrary, tmp_path: Path) -> FlowEngine:
    return FlowEngine(library, load_actions(tmp_path / "actions.yaml"), clock=lambda: NOW)


class Chat:
    """One customer's session: each `say` is a turn through the engine, with the state kept between turns."""

    def __init__(self, engine: FlowEngine, state: SessionDialogue | None = None) -> None:
        self.engine = engine
        self.state = state or SessionDialogue()

    async def say(
        self, text: str, *, starts: str | None = None, language: Language = "zh", digression: bool = False
    ) -> FlowOutcome:
        """`starts`: the flow the router would start for this message; `digression`: it asks something else."""
        orders = [Entity(type="order_number", value=m, text=m) for m in re.findall(r"LM\d{8}", text)]
        start = self.engine.library.get(starts) if starts is not None else None
        turn = FlowTurn(
            session_id="s1", text=text, language=language, entities=orders, start=start, digression=digression
        )
        return await self.engine.handle(self.state, turn)

    def fork(self) -> Chat:
        """The same session as saved in the database now (a second worker, or a restart, loads this)."""
        return Chat(self.engine, SessionDialogue.from_json(self.state.to_json(), self.state.version))


def writes() -> list[dict[str, Any]]:
    return list(SHOP.returns.values())


async def at_confirmation(chat: Chat) -> FlowOutcome:
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")
    return await chat.say("不想要了")


# ---- the happy path, and nothing written before "yes" -------------------------------------------------------


async def test_a_return_is_collected_verified_confirmed_and_filed(engine: FlowEngine) -> None:
    chat = Chat(engine)

    first = await chat.say("我要退货", starts="return")
    assert first.reply == "请提供订单号"
    assert first.events == ["started"]

    order = await chat.say("LM26110625")
    assert "请提供下单时使用的手机号" in order.reply
    assert SHOP.calls == []  # nothing about the order is looked up before the customer proves it is theirs

    verified = await chat.say("手机尾号1234")
    assert "verified" in verified.events
    assert verified.reply == "退货原因是？"
    assert [c.action for c in verified.actions] == ["verify_identity", "get_order"]
    assert verified.actions[0].args["phone"] == "***"  # the phone number stays out of the trace

    confirm = await chat.say("不想要了")
    assert confirm.reply == "确认为订单 LM26110625 提交退货吗？"
    assert writes() == []

    done = await chat.say("确认")
    assert done.reply == "已提交，服务单号 AS1"
    assert "completed" in done.events
    assert writes() == [{"id": "AS1", "order_id": "LM26110625", "reason": "no_reason"}]
    assert [(c.action, c.write) for c in done.actions] == [("create_return", True)]
    assert chat.state.active is None
    assert chat.state.recent[-1]["outcome"] == "completed"


async def test_a_run_keeps_the_intent_that_started_it_through_a_save_and_an_older_saved_state_still_loads(
    engine: FlowEngine,
) -> None:
    chat = Chat(engine)
    turn = FlowTurn(
        session_id="s1", text="我要退货", language="zh", start=engine.library.get("return"), intent="return"
    )
    await chat.engine.handle(chat.state, turn)
    saved = chat.fork().state
    assert saved.active is not None and saved.active.intent == "return"

    older = chat.state.to_json()
    del older["active"]["intent"]  # saved before runs kept their intent
    loaded = SessionDialogue.from_json(older, chat.state.version)
    assert loaded.active is not None and loaded.active.intent is None and loaded.active.flow == "return"


async def test_the_flow_runs_in_english_too(engine: FlowEngine) -> None:
    chat = Chat(engine)

    await chat.say("I want to return something", starts="return", language="en")
    await chat.say("LM26110625", language="en")
    await chat.say("1234", language="en")
    confirm = await chat.say("I changed my mind", language="en")
    done = await chat.say("yes", language="en")

    assert confirm.reply == "Submit a return for LM26110625?"
    assert done.reply == "Filed: AS1"


async def test_a_second_confirm_is_told_it_is_done_and_writes_nothing(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await at_confirmation(chat)
    await chat.say("确认")

    again = await chat.say("确认")

    assert again.handled
    assert again.events == ["already_done"]
    assert "已经办理完成，不会重复提交" in again.reply
    assert [name for name, _ in SHOP.calls].count("create_return") == 1
    assert len(writes()) == 1
    # only once: a third "ok" is an ordinary message again, for the rest of the pipeline
    assert not (await chat.say("好的")).handled


async def test_a_confirm_replayed_from_the_same_saved_state_acts_only_once(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await at_confirmation(chat)
    resent = chat.fork()  # e.g. the worker died after calling the shop, before saving the state

    first = await chat.say("确认")
    second = await resent.say("确认")

    assert first.reply == second.reply == "已提交，服务单号 AS1"
    assert len(writes()) == 1
    assert [name for name, _ in SHOP.calls].count("create_return") == 2  # sent twice, acted on once


async def test_declining_the_confirmation_writes_nothing(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await at_confirmation(chat)

    declined = await chat.say("不")

    assert "declined" in declined.events
    assert "没有提交" in declined.reply
    assert writes() == []
    assert chat.state.active is None


@pytest.mark.parametrize("word", ["不用了", "算了"])
async def test_a_cancel_word_at_the_confirmation_is_a_no(engine: FlowEngine, word: str) -> None:
    chat = Chat(engine)
    await at_confirmation(chat)

    declined = await chat.say(word)

    assert "declined" in declined.events and "没有提交" in declined.reply
    assert writes() == [] and chat.state.active is None


# ---- cancel, correct, give up ------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["算了", "算了吧！", "不用了，谢谢"])
async def test_a_cancel_word_ends_the_flow_with_nothing_written(engine: FlowEngine, word: str) -> None:
    chat = Chat(engine)
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")  # now asked for the reason

    cancelled = await chat.say(word)

    assert cancelled.events == ["cancelled"]
    assert cancelled.reply.startswith("好的，已为您取消“退货申请”，没有做任何更改")
    assert writes() == []
    assert chat.state.active is None
    assert chat.state.recent[-1]["outcome"] == "cancelled"
    assert not (await chat.say("确认")).handled  # a late "yes" does not revive it


async def test_a_correction_rewinds_to_the_order_and_files_for_the_new_one(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")

    corrected = await chat.say("不对，是 LM26110737")

    assert "corrected:order_id" in corrected.events
    assert corrected.reply.startswith("好的，已更正。")
    assert corrected.reply.endswith("退货原因是？")
    # the new order is checked against the verified customer before anything else happens
    assert ("get_order", {"order_id": "LM26110737"}) in SHOP.calls
    confirm = await chat.say("质量问题")
    assert confirm.reply == "确认为订单 LM26110737 提交退货吗？"
    await chat.say("确认")
    assert writes() == [{"id": "AS1", "order_id": "LM26110737", "reason": "quality_issue"}]


async def test_a_correction_to_someone_elses_order_is_refused(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")

    refused = await chat.say("不对，是 LM26110999")

    assert "not_owner" in refused.events
    assert "订单 LM26110999 不属于已验证的账户" in refused.reply
    assert refused.reply.endswith("请提供订单号")
    assert "order_id" not in refused.slots


async def test_unrecognised_answers_until_max_attempts_hand_off(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")

    first = await chat.say("就是想退")
    assert first.reply == "抱歉，我没有识别出来。\n退货原因是？"
    assert first.handoff is None

    second = await chat.say("你猜")
    assert second.handoff == "slot_attempts_exhausted"
    assert second.reply == "看来我没能帮上忙，我为您转接人工客服。"
    assert second.slots["order_id"] == "LM26110625"  # the ticket carries what was collected
    assert chat.state.active is None
    assert chat.state.recent[-1]["outcome"] == "gave_up"
    assert writes() == []


async def test_a_wrong_phone_three_times_hands_off_without_revealing_the_order(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("查订单", starts="order_status")
    await chat.say("LM26110625")

    first = await chat.say("尾号0000")
    await chat.say("尾号1111")
    last = await chat.say("尾号2222")

    assert first.reply.startswith("手机号与订单信息不一致。")
    assert last.handoff == "identity_not_verified"
    assert all(name == "verify_identity" for name, _ in SHOP.calls)
    assert chat.state.identity is None


async def test_a_question_in_between_is_left_to_knowledge_and_the_flow_resumes(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")

    aside = await chat.say("你们退货运费谁出？", digression=True)

    assert not aside.handled  # the knowledge stages answer it
    assert aside.resume_prompt == "我们接着办理“退货申请”：退货原因是？"
    assert chat.state.active is not None and chat.state.active.awaiting == "collect:reason"
    assert (await chat.say("不想要了")).reply == "确认为订单 LM26110625 提交退货吗？"


async def test_switching_to_another_task_keeps_the_order_number(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")

    switched = await chat.say("先帮我查下订单状态", starts="order_status")

    assert switched.flow == "order_status"
    assert switched.reply == "好的，我们先处理这个。\n订单 LM26110625 状态：已签收"
    assert chat.state.recent[-2]["outcome"] == "switched"
    assert writes() == []


# ---- context and identity ----------------------------------------------------------------------------------


async def test_the_order_just_verified_is_prefilled_into_the_next_flow(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("我的订单到哪了", starts="order_status")
    await chat.say("LM26110625")
    status = await chat.say("手机尾号1234")
    assert status.reply == "订单 LM26110625 状态：已签收"

    nxt = await chat.say("那我要退货", starts="return")

    assert "from_context:order_id" in nxt.events
    assert nxt.reply == "退货原因是？"  # neither the order number nor the phone is asked again
    assert nxt.slots["order_id"] == "LM26110625"
    assert [name for name, _ in SHOP.calls].count("verify_identity") == 1


async def test_an_unverified_order_is_never_sent_to_the_shop(engine: FlowEngine) -> None:
    # `peek` forgets to verify: the guardrail refuses the call whatever the flow file says
    chat = Chat(engine)

    refused = await chat.say("看看 LM26110999", starts="peek")

    assert SHOP.calls == []
    assert "订单 LM26110999 不属于已验证的账户" in refused.reply
    assert refused.error is not None and refused.error.startswith("refused get_order")
    assert chat.state.active is None


# ---- backend errors ----------------------------------------------------------------------------------------


async def test_a_backend_failure_without_on_error_hands_off(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("查订单", starts="order_status")
    await chat.say("LM26110625")
    SHOP.broken = True

    failed = await chat.say("手机尾号1234")

    assert failed.handoff == "backend_failure"
    assert failed.reply == "抱歉，系统暂时无法办理该业务，我为您转接人工客服，稍后由同事继续处理。"
    assert "10.0.0.7" not in failed.reply  # the backend's own words reach the operator, not the customer
    assert failed.error is not None and "backend_error" in failed.error
    assert chat.state.active is None
    assert chat.state.recent[-1]["outcome"] == "error"


async def test_on_error_clear_asks_again(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("我要退货", starts="return")
    await chat.say("LM26110625")
    await chat.say("手机尾号1234")
    del SHOP.orders["LM26110737"]

    missing = await chat.say("不对，是 LM26110737")

    # the verified customer's new order is checked with get_order; its error is handled by the verify step
    assert missing.handoff is None
    assert missing.reply == "好的，已更正。\n没有找到订单 LM26110737。\n请提供订单号"
    assert "order_id" not in missing.slots


async def test_a_business_error_with_on_error_is_explained(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await at_confirmation(chat)
    SHOP.refuse_returns = "签收已超过 7 天"

    refused = await chat.say("确认")

    assert "error:outside_return_window" in refused.events
    assert refused.reply == "无法退货：签收已超过 7 天"
    assert refused.handoff is None
    assert writes() == []


async def test_a_template_that_fails_at_run_time_apologises_and_hands_off(engine: FlowEngine) -> None:
    chat = Chat(engine)
    await chat.say("退款到哪了", starts="refund_status")
    await chat.say("LM26110625")

    failed = await chat.say("手机尾号1234")  # the order has no refund, so `order.refund.amount` is undefined

    assert failed.handoff == "flow_error"
    assert failed.reply == "抱歉，系统暂时无法办理该业务，我为您转接人工客服，稍后由同事继续处理。"
    assert failed.error is not None and "refund" in failed.error
    assert chat.state.active is None


# ---- what plainly answers the open question (understanding then needs no LLM for it) ------------------------


async def test_only_a_plain_answer_to_the_open_question_counts_as_one(engine: FlowEngine) -> None:
    chat = Chat(engine)

    def answers(text: str) -> bool:
        orders = [Entity(type="order_number", value=m, text=m) for m in re.findall(r"LM\d{8}", text)]
        return engine.answers_question(chat.state, FlowTurn(session_id="s1", text=text, language="zh", entities=orders))

    assert not answers("LM26110625")  # no flow is open
    await chat.say("我要退货", starts="return")
    assert answers("LM26110625") and answers("算了")  # the order number asked for; a cancel
    assert not answers("退货运费谁承担？")
    await chat.say("LM26110625")
    assert answers("手机尾号1234") and not answers("你们几点下班")  # the identity check wants a phone number
    await chat.say("手机尾号1234")
    assert answers("不想要了") and not answers("怎么寄回去")  # one of the reason's choices
    await chat.say("不想要了")
    assert answers("确认") and answers("不用了") and not answers("运费多少")  # a yes or a no to the confirmation
    state_before = chat.state.to_json()
    answers("确认")
    assert chat.state.to_json() == state_before  # asking changes nothing
