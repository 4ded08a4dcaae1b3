"""Flow files as an operator writes them: mistakes are reported with file and line at start-up, triggers pick the
flow a customer's message starts, and templates render what customers read (safely, in their language)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from kefu.connectors import Actions, load_actions
from kefu.datafiles import load_yaml_model
from kefu.dialogue.flows import COMMANDS_FILE, Commands, FlowLibrary, load_flows
from kefu.dialogue.templates import FlowTemplates, address_part, variants_like
from kefu.errors import DataFileError
from tests.conftest import DEMO_SHOP

ACTIONS = """\
connectors:
  erp:
    type: python
actions:
  verify_identity:
    connector: erp
    kind: read
    function: tests.unit.test_flow_files:backend_noop
    params: [order_id, phone]
  get_order:
    connector: erp
    kind: read
    function: tests.unit.test_flow_files:backend_noop
    params: [order_id]
    identity_params: [order_id]
  create_return:
    connector: erp
    kind: write
    function: tests.unit.test_flow_files:backend_noop
    params: [order_id, reason_code, detail]
    required: [order_id, reason_code]
    identity_params: [order_id]
"""

RETURN_FLOW = """\
# the return flow of a test shop
flows:
  - name: return
    description: {zh: 退货申请, en: return request}
    triggers: [{intent: return_request}]
    slots:
      order_id:
        entity: order_number
        prompt: {zh: 请提供订单号, en: "Your order number?"}
      reason:
        choices: {no_reason: {zh: [不想要], en: [changed my mind]}}
        prompt: {zh: 退货原因是？, en: "Why are you returning it?"}
    steps:
      - {id: ask_order, collect: order_id}
      - {id: verify_owner, verify: order_id}
      - {id: load_order, call: get_order, with: {order_id: "{{ slots.order_id }}"}, save_as: order}
      - id: eligible
        branch:
          - if: "not order.returnable"
            reply: {zh: 已超过退货期限, en: Past the return period}
            end: true
      - {id: ask_reason, collect: reason}
      - {id: confirm, confirm: {zh: "确认提交吗？", en: "Shall I submit it?"}}
      - {id: submit, call: create_return, with: {order_id: "{{ slots.order_id }}", reason_code: "{{ slots.reason }}"}, save_as: after_sale}
      - {id: done, reply: {zh: "已提交，服务单号 {{ after_sale.id }}", en: "Filed: {{ after_sale.id }}"}, end: true}
"""  # noqa: E501


def backend_noop(**_: Any) -> dict[str, Any]:
    return {}


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if needle in line)


@pytest.fixture
def actions(tmp_path: Path) -> Actions:
    path = tmp_path / "actions.yaml"
    path.write_text(ACTIONS, encoding="utf-8")
    return load_actions(path)


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "flows"
    directory.mkdir()
    return directory


def write_flows(directory: Path, text: str, name: str = "orders.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- loading -------------------------------------------------------------------------------------------------


def test_a_valid_flow_file_loads(flows_dir: Path, actions: Actions) -> None:
    write_flows(flows_dir, RETURN_FLOW)

    library = load_flows(flows_dir, actions)

    flow = library.get("return")
    assert flow is not None
    assert [s.kind for s in flow.steps] == [
        "collect",
        "verify",
        "call",
        "branch",
        "collect",
        "confirm",
        "call",
        "reply",
    ]
    assert library.identity.verify_action == "verify_identity"
    assert library.commands.cancel.zh[0] == "算了"  # the packaged default command words


async def test_the_demo_shops_flows_load_against_its_actions() -> None:
    actions = load_actions(DEMO_SHOP / "actions.yaml")
    try:
        library = load_flows(DEMO_SHOP / "flows", actions)
    finally:
        await actions.aclose()

    assert {"order_status", "return", "exchange", "cancel_order", "refund_status", "invoice"} <= set(library.flows)
    for flow in library.flows.values():
        for step in flow.steps:
            assert step.call is None or actions.get(step.call) is not None, (flow.name, step.id)


# case → (change to RETURN_FLOW, the text on the line the error must name, what the error must say)
BROKEN_FLOWS: dict[str, tuple[Callable[[str], str], str, str]] = {
    "unknown action": (
        lambda t: t.replace("call: create_return", "call: create_refund"),
        "call: create_refund",
        "calls unknown action 'create_refund'; known: create_return, get_order, verify_identity",
    ),
    "missing action argument": (
        lambda t: t.replace(', reason_code: "{{ slots.reason }}"', ""),
        "id: submit",
        "action 'create_return' needs ['reason_code'] in 'with'",
    ),
    "unknown slot in collect": (
        lambda t: t.replace("collect: reason}", "collect: reasons}"),
        "name: return",
        "step 'ask_reason' uses slot 'reasons', which is not declared under slots",
    ),
    "unknown step in goto": (
        lambda t: t.replace("collect: reason}", "collect: reason, goto: finish}"),
        "name: return",
        "step 'ask_reason' goes to 'finish', which is not a step of this flow",
    ),
    "bad template syntax": (
        lambda t: t.replace("服务单号 {{ after_sale.id }}", "服务单号 {{ after_sale.id }"),
        "id: done",
        "template error",
    ),
    "bad condition": (
        lambda t: t.replace('"not order.returnable"', '"order.returnable =="'),
        "if:",
        "condition error in 'order.returnable =='",
    ),
    "unknown filter in a condition": (
        lambda t: t.replace('"not order.returnable"', '"order.returnable | yesno"'),
        "if:",
        "No filter named 'yesno'",
    ),
    "unknown entity type": (
        lambda t: t.replace("entity: order_number", "entity: order_no"),
        "entity: order_no",
        "unknown entity type 'order_no'",
    ),
    "step doing two things": (
        lambda t: t.replace("{id: ask_reason, collect: reason}", "{id: ask_reason, collect: reason, verify: order_id}"),
        "id: ask_reason",
        "step 'ask_reason' must do one of",
    ),
    "unknown step field": (
        lambda t: t.replace("{id: ask_order, collect: order_id}", "{id: ask_order, colect: order_id}"),
        "colect: order_id",
        "Extra inputs are not permitted",
    ),
    "a slot nothing can recognise": (
        lambda t: t.replace("        entity: order_number\n", ""),
        "prompt: {zh: 请提供订单号",
        "a slot needs entity, pattern, choices or free_text",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FLOWS))
def test_mistakes_in_flow_files_name_the_file_and_line(flows_dir: Path, actions: Actions, case: str) -> None:
    change, at, message = BROKEN_FLOWS[case]
    text = change(RETURN_FLOW)
    assert text != RETURN_FLOW
    path = write_flows(flows_dir, text)

    with pytest.raises(DataFileError) as caught:
        load_flows(flows_dir, actions)

    assert caught.value.path == str(path)
    assert caught.value.line == line_of(path, at), str(caught.value)
    assert message in str(caught.value)


def test_an_unknown_filter_in_a_reply_is_found_at_load_time(flows_dir: Path, actions: Actions) -> None:
    path = write_flows(flows_dir, RETURN_FLOW.replace("{{ after_sale.id }}", "{{ after_sale.id | upper_case }}", 1))

    with pytest.raises(DataFileError) as caught:
        load_flows(flows_dir, actions)

    assert caught.value.line == line_of(path, "id: done")
    assert "upper_case" in str(caught.value)


def test_a_flow_defined_twice_is_named(flows_dir: Path, actions: Actions) -> None:
    write_flows(flows_dir, RETURN_FLOW, "a.yaml")
    second = write_flows(flows_dir, "\n\n" + RETURN_FLOW, "b.yaml")

    with pytest.raises(DataFileError) as caught:
        load_flows(flows_dir, actions)

    assert caught.value.path == str(second)
    assert caught.value.line == line_of(second, "name: return")
    assert "flow 'return' is defined twice" in str(caught.value)


def test_an_action_problem_names_the_line_of_its_own_flow(flows_dir: Path, actions: Actions) -> None:
    second = RETURN_FLOW.split("flows:\n", 1)[1].replace("name: return", "name: return_again")
    broken = second.replace(', reason_code: "{{ slots.reason }}"', "")
    path = write_flows(flows_dir, RETURN_FLOW + broken)

    with pytest.raises(DataFileError) as caught:
        load_flows(flows_dir, actions)

    lines = path.read_text(encoding="utf-8").splitlines()
    submits = [n for n, line in enumerate(lines, start=1) if "id: submit" in line]
    assert caught.value.line == submits[1]  # the second flow's step, not the first step with that id
    assert "flow 'return_again' step 'submit'" in str(caught.value)


def test_verify_steps_need_the_identity_action(flows_dir: Path, tmp_path: Path) -> None:
    write_flows(flows_dir, RETURN_FLOW)
    path = tmp_path / "actions.yaml"
    path.write_text(ACTIONS.replace("verify_identity:", "check_phone:"), encoding="utf-8")

    with pytest.raises(DataFileError, match="identity action 'verify_identity' is not defined") as caught:
        load_flows(flows_dir, load_actions(path))

    assert caught.value.path == str(flows_dir / "dialogue.yaml")


def test_a_shop_can_replace_the_command_words(flows_dir: Path, actions: Actions) -> None:
    write_flows(flows_dir, RETURN_FLOW)
    write_flows(flows_dir, "cancel: {zh: [撤销]}\nconfirm: {zh: [准了]}\ndecline: {zh: [驳回]}\n", "commands.yaml")

    commands = load_flows(flows_dir, actions).commands

    assert (commands.cancel.zh, commands.confirm.zh, commands.decline.zh) == (["撤销"], ["准了"], ["驳回"])


# ---- which flow a message starts -----------------------------------------------------------------------------

TRIGGER_FLOWS = """\
flows:
  - name: refund_status
    description: {zh: 退款进度, en: refund status}
    triggers:
      - {intent: refund_status, entities_any: [order_number, after_sale_id]}
      - intent: refund_status
        words_any: {zh: [我的退款, 帮我查], en: [my, "i need"]}
    slots: &order {order_id: {entity: order_number, prompt: {zh: 订单号？, en: "Order number?"}}}
    steps: [{id: ask_order, collect: order_id}]
  - name: refund_question
    description: {zh: 退款问题, en: refund question}
    triggers: [{intent: refund_status}]
    priority: 90
    slots: *order
    steps: [{id: ask_order, collect: order_id}]
  - name: complaint_low
    description: {zh: 投诉, en: complaint}
    triggers: [{intent: complaint}]
    priority: 40
    slots: *order
    steps: [{id: ask_order, collect: order_id}]
  - name: complaint_high
    description: {zh: 投诉, en: complaint}
    triggers: [{intent: complaint}]
    priority: 60
    slots: *order
    steps: [{id: ask_order, collect: order_id}]
"""


@pytest.fixture
def triggers(flows_dir: Path) -> FlowLibrary:
    write_flows(flows_dir, TRIGGER_FLOWS)
    return load_flows(flows_dir, None)


def started(library: FlowLibrary, intent: str | None, text: str, entities: set[str] | None = None) -> str | None:
    flow = library.for_intent(intent, entities or set(), text)
    return flow.name if flow is not None else None


def test_a_trigger_on_entities_beats_a_higher_priority_plain_one(triggers: FlowLibrary) -> None:
    assert started(triggers, "refund_status", "LM26110625 退款到哪了", {"order_number"}) == "refund_status"
    assert started(triggers, "refund_status", "退款到哪了", {"after_sale_id"}) == "refund_status"
    assert started(triggers, "refund_status", "退款多久到账", {"phone"}) == "refund_question"


@pytest.mark.parametrize(
    ("text", "flow"),
    [
        ("Where is my refund?", "refund_status"),
        ("MY REFUND please", "refund_status"),
        ("refund for my-order", "refund_status"),
        ("ＭＹ refund", "refund_status"),  # full-width letters are normalised
        ("I need my money back", "refund_status"),
        ("Can I refund it myself?", "refund_question"),  # "my" only on word edges
        ("Is the dummy refunded?", "refund_question"),
        ("I needed a refund", "refund_question"),
        ("帮我查一下退款", "refund_status"),  # Chinese phrases anywhere in the message
        ("我的退款怎么还没到", "refund_status"),
        ("退款一般多久到账", "refund_question"),
    ],
)
def test_words_any_picks_the_request_over_the_question(triggers: FlowLibrary, text: str, flow: str) -> None:
    assert started(triggers, "refund_status", text) == flow


def test_priority_decides_between_equally_specific_triggers(triggers: FlowLibrary) -> None:
    assert started(triggers, "complaint", "太差了") == "complaint_high"


def test_no_intent_or_an_unknown_one_starts_nothing(triggers: FlowLibrary) -> None:
    assert started(triggers, None, "my refund") is None
    assert started(triggers, "greeting", "my refund") is None


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("你们支持七天无理由退货吗", True),
        ("请问贵店能开专票吗", True),
        ("Do you ship to Canada?", True),
        ("  DO YOU accept PayPal?", True),
        ("Is there a warranty?", True),
        ("where is my refund?", False),
        ("我的订单什么时候到", False),
        ("I want to know do you ship abroad", False),  # only how the message starts counts
    ],
)
def test_policy_questions_are_recognised_by_how_they_start(text: str, asks: bool) -> None:
    commands = load_yaml_model(COMMANDS_FILE, Commands)
    assert commands.asks_about_policy(text) is asks


# ---- templates -----------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=timezone(timedelta(hours=8)))


@pytest.fixture
def templates() -> FlowTemplates:
    return FlowTemplates()


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ lipsum.__globals__ }}",
        "{{ slots.update({'order_id': 'LM00000001'}) }}",  # flows cannot change state behind the engine's back
    ],
)
def test_the_sandbox_refuses_escapes(templates: FlowTemplates, source: str) -> None:
    with pytest.raises(SecurityError):
        templates.render(source, {"slots": {"order_id": "LM26110625"}})


def test_unknown_variables_are_errors_not_blanks(templates: FlowTemplates) -> None:
    with pytest.raises(UndefinedError):
        templates.render("订单 {{ order_id }} 已提交", {})
    with pytest.raises(UndefinedError):
        templates.render("{{ order.refund_id }}", {"order": {"order_id": "LM26110625"}})
    with pytest.raises(UndefinedError):
        templates.evaluate("order.total > 100", {})


def test_conditions_evaluate_to_python_values(templates: FlowTemplates) -> None:
    variables = {"order": {"status": "delivered", "total": 299.0}, "policy": {"free_return_over": 200}}

    assert templates.evaluate("order.status == 'delivered' and order.total > policy.free_return_over", variables)
    assert templates.evaluate("order.status in ['pending', 'paid']", variables) is False


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 1299.5 | money }}", "¥1,299.50"),
        ("{{ '88' | money }}", "¥88.00"),
        ("{{ 12 | money('$') }}", "$12.00"),
        ("{{ 'free' | money }}", "free"),
        ("{{ name | lang('zh') }}", "樱花粉"),
        ("{{ name | lang('en') }}", "Blossom Pink"),
        ("{{ title | lang('en') }}", "Return request"),
        ("{{ only_zh | lang('en') }}", "仅中文"),
        ("{{ 'LM26110625' | lang('en') }}", "LM26110625"),
        ("{{ at | date('zh') }}", "2026年11月20日"),
        ("{{ at | date('en') }}", "20 Nov 2026"),
        ("{{ '2026-11-03' | date(lang) }}", "03 Nov 2026"),
        ("{{ 'soon' | date('zh') }}", "soon"),
        ("{{ none | date('zh') }}", ""),
        ("{{ at | datetime('zh') }}", "11月20日 15:04"),
        ("{{ at | datetime('en') }}", "20 Nov 15:04"),
    ],
)
def test_filters_render_what_customers_read(templates: FlowTemplates, source: str, expected: str) -> None:
    variables = {
        "name": "樱花粉/Blossom Pink",
        "title": {"zh": "退货申请", "en": "Return request"},
        "only_zh": {"zh": "仅中文"},
        "at": "2026-11-20T15:04:00+08:00",
        "none": None,
        "lang": "en",
    }
    assert templates.render(source, variables) == expected


@pytest.mark.parametrize(
    ("value", "days"),
    [
        ("2026-11-10T15:00:00+08:00", 10),
        ("2026-11-20T14:00:00+08:00", 0),
        ("2026-11-13", 7),  # a date without a time or zone is read in the clock's zone
        (datetime(2026, 11, 19, 7, 0, tzinfo=UTC), 1),
        ("not a date", None),
        (None, None),
    ],
)
def test_days_since(templates: FlowTemplates, value: Any, days: int | None) -> None:
    assert templates.evaluate("delivered_at | days_since(now)", {"delivered_at": value, "now": NOW}) == days


def test_a_policy_window_condition_with_days_since(templates: FlowTemplates) -> None:
    condition = "order.delivered_at | days_since(now) <= policy.no_reason_days"
    policy = {"no_reason_days": 7}

    assert templates.evaluate(condition, {"order": {"delivered_at": "2026-11-14"}, "now": NOW, "policy": policy})
    assert not templates.evaluate(condition, {"order": {"delivered_at": "2026-11-12"}, "now": NOW, "policy": policy})


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("广东省深圳市南山区科技园科苑路15号", ("广东", "深圳市", "南山区", "科技园科苑路15号")),
        ("浙江省杭州市西湖区文三路 90 号", ("浙江", "杭州市", "西湖区", "文三路90号")),
        ("上海市浦东新区世纪大道100号", ("上海", "上海市", "浦东新区", "世纪大道100号")),
        ("北京朝阳区建国路88号", ("北京", "北京市", "朝阳区", "建国路88号")),
        ("广西壮族自治区南宁市青秀区民族大道1号", ("广西", "南宁市", "青秀区", "民族大道1号")),
        ("新疆维吾尔自治区乌鲁木齐市天山区解放南路1号", ("新疆", "乌鲁木齐市", "天山区", "解放南路1号")),
        ("内蒙古自治区呼和浩特市新城区中山路2号", ("内蒙古", "呼和浩特市", "新城区", "中山路2号")),
    ],
)
def test_address_part_splits_a_chinese_address(address: str, parts: tuple[str, str, str, str]) -> None:
    assert tuple(address_part(address, p) for p in ("province", "city", "district", "street")) == parts


def test_address_part_from_a_template(templates: FlowTemplates) -> None:
    source = "{{ slots.address | address_part('city') }}/{{ slots.address | address_part('street') }}"
    assert templates.render(source, {"slots": {"address": "江苏省苏州市姑苏区人民路 8 号"}}) == "苏州市/人民路8号"


VARIANTS = [
    {"sku": "LM-1-PK", "color": "樱花粉/Blossom Pink", "stock": 3},
    {"sku": "LM-1-BL", "color": "冰川蓝/Glacier Blue", "stock": 0},
    {"sku": "LM-1-XX", "color": None, "stock": 9},
]


@pytest.mark.parametrize(
    ("wanted", "skus"),
    [
        ("樱花粉/Blossom Pink", ["LM-1-PK"]),
        ("Blossom Pink", ["LM-1-PK"]),
        ("blossom pink", ["LM-1-PK"]),
        ("樱花粉", ["LM-1-PK"]),
        ("pink", ["LM-1-PK"]),
        ("蓝", ["LM-1-BL"]),
        ("green", []),
        ("", []),
        (None, []),
    ],
)
def test_variants_like_finds_what_the_customer_asked_for(wanted: str | None, skus: list[str]) -> None:
    assert [v["sku"] for v in variants_like(VARIANTS, "color", wanted)] == skus


def test_variants_like_prefers_exact_names() -> None:
    variants = [{"sku": "A", "color": "樱花粉/Blossom Pink"}, {"sku": "B", "color": "粉色/Pink"}]

    assert [v["sku"] for v in variants_like(variants, "color", "pink")] == ["B"]
    assert variants_like("not a list", "color", "pink") == []


def test_variants_like_in_a_condition(templates: FlowTemplates) -> None:
    variables = {"product": {"variants": VARIANTS}, "slots": {"variant": "Glacier Blue"}}

    in_stock = "product.variants | variants_like('color', slots.variant) | sum(attribute='stock')"
    assert templates.evaluate(in_stock, variables) == 0


def test_a_template_error_is_a_template_error(templates: FlowTemplates) -> None:
    # the engine turns exactly this family into an apology and a handoff instead of a crash
    with pytest.raises(TemplateError):
        templates.render("{{ 1 / 0 if false else missing.attr }}", {})
