"""Scenario files (`kefu eval scenarios`): validation with file and line, matching, failure reports, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kefu.cli.main import app
from kefu.connectors import load_actions
from kefu.errors import DataFileError
from kefu.eval.scenarios import (
    Turn,
    check_actions,
    demo_backend,
    load_scenarios,
    run_scenarios,
    subset_problems,
    turn_problems,
)
from kefu.llm.testing import ScriptedLLM
from tests.conftest import DEMO_SHOP, GUARDS_CACHE, UNDERSTANDING_CACHE, make_settings

HEADER = """\
version: 1
now: "2026-11-20T15:00:00+08:00"
reset: {connector: shop, method: POST, path: /admin/reset}
write_log: {connector: shop, path: /admin/writes}
scenarios:
"""

# One scenario that passes and one that fails at its first turn: before verification the bot asks for the phone.
TWO_SCENARIOS = (
    HEADER
    + """\
  - name: status_after_verification
    language: zh
    turns:
      - say: 帮我查一下订单 LM26110625 的状态
        contains: 手机号
      - say: "0827"
        contains: [已签收]
        actions: [{action: get_order, with: {order_id: LM26110625}, ok: true}]
    backend:
      - {action: get_order, with: {order_id: LM26110625}, expect: {status: delivered, policy.cancellable: false}}
    writes: 0
  - name: status_expected_too_early
    language: zh
    turns:
      - say: 帮我查一下订单 LM26110625 的状态
        contains: 已签收
"""
)


def write(tmp_path: Path, text: str, name: str = "scenarios.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- the file format ---------------------------------------------------------------------------------------------


def test_a_misspelt_field_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + """\
  - name: typo
    language: en
    turns:
      - say: hello
        contain: hi
""",
    )
    with pytest.raises(DataFileError) as caught:
        load_scenarios(path)
    assert str(caught.value).startswith(f"{path}:10: scenarios.0.turns.0.contain:")
    assert "Extra inputs are not permitted" in str(caught.value)


def test_wrong_types_are_rejected_not_coerced(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + """\
  - name: types
    language: en
    turns:
      - say: hello
        handoff: "yes"
""",
    )
    with pytest.raises(DataFileError, match=r":10: scenarios\.0\.turns\.0\.handoff: Input should be a valid boolean"):
        load_scenarios(path)


def test_numbers_in_texts_are_read_as_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + """\
  - name: numbers
    language: zh
    turns:
      - say: 13851335197
        contains: [78184729385880, 已签收]
""",
    )
    turn = load_scenarios(path).scenarios[0].turns[0]
    assert turn.say == "13851335197" and turn.contains == ["78184729385880", "已签收"]


def test_duplicate_names_and_writes_without_a_write_log_name_their_line(tmp_path: Path) -> None:
    twice = write(
        tmp_path,
        HEADER
        + """\
  - name: same
    language: en
    turns: [{say: hi}]
  - name: same
    language: en
    turns: [{say: hi}]
""",
    )
    with pytest.raises(DataFileError, match=r"scenarios\.yaml:9: scenario 'same' appears twice"):
        load_scenarios(twice)
    no_log = write(
        tmp_path,
        """\
scenarios:
  - name: counts writes
    language: en
    turns: [{say: hi}]
    writes: 0
""",
        "no_log.yaml",
    )
    with pytest.raises(DataFileError, match=r"no_log\.yaml:5: scenario 'counts writes' expects writes.*write_log"):
        load_scenarios(no_log)


def test_a_clock_without_time_zone_and_an_empty_file_are_refused(tmp_path: Path) -> None:
    naive = write(tmp_path, 'now: "2026-11-20T15:00:00"\nscenarios: [{name: a, language: en, turns: [{say: hi}]}]\n')
    with pytest.raises(DataFileError, match="give a time zone"):
        load_scenarios(naive)
    with pytest.raises(DataFileError, match=r"empty\.yaml: scenarios: Field required"):
        load_scenarios(write(tmp_path, "", "empty.yaml"))


def test_backend_checks_may_only_call_known_read_actions(tmp_path: Path) -> None:
    actions = load_actions(DEMO_SHOP / "actions.yaml")
    unknown = write(
        tmp_path,
        HEADER
        + """\
  - name: reads
    language: en
    turns: [{say: hi}]
    backend:
      - {action: get_orders, with: {order_id: LM26110625}}
""",
    )
    with pytest.raises(DataFileError, match=r"scenarios\.yaml:10: unknown action 'get_orders'; actions\.yaml defines"):
        check_actions(unknown, load_scenarios(unknown), actions)
    writes = write(
        tmp_path,
        HEADER
        + """\
  - name: writes
    language: en
    turns: [{say: hi}]
    backend:
      - {action: cancel_order, with: {order_id: LM26110625}}
""",
        "writes.yaml",
    )
    with pytest.raises(DataFileError, match=r"writes\.yaml:10: .*'cancel_order' is a write action"):
        check_actions(writes, load_scenarios(writes), actions)


def test_the_demo_shops_scenario_file_is_valid_and_bilingual() -> None:
    path = DEMO_SHOP / "scenarios.yaml"
    file = load_scenarios(path)
    check_actions(path, file, load_actions(DEMO_SHOP / "actions.yaml"))
    languages = [s.language for s in file.scenarios]
    assert len(languages) >= 40
    assert min(languages.count("zh"), languages.count("en")) >= len(languages) // 3


# ---- matching ----------------------------------------------------------------------------------------------------

ORDER: dict[str, Any] = {
    "order_id": "LM26110625",
    "status": "delivered",
    "total": 899.0,
    "policy": {"cancellable": False, "reasons": ["a", "b"]},
    "items": [{"sku": "LM-AU-001", "qty": 1}, {"sku": "LM-AU-002", "qty": 2}],
    "after_sale": None,
}


@pytest.mark.parametrize(
    "expected",
    [
        {},
        {"status": "delivered"},
        {"policy": {"cancellable": False}},
        {"policy.cancellable": False},
        {"items.1.sku": "LM-AU-002"},
        {"items": [{"sku": "LM-AU-002"}]},
        {"policy.reasons": ["b"]},
        {"after_sale": None, "refund": None},
        {"total": 899},
    ],
)
def test_subset_matches(expected: dict[str, Any]) -> None:
    assert subset_problems(expected, ORDER) == []


@pytest.mark.parametrize(
    ("expected", "problem"),
    [
        ({"status": "cancelled"}, "status: expected 'cancelled', got 'delivered'"),
        ({"policy.cancellable": 0}, "policy.cancellable: expected 0, got False"),
        ({"policy": {"refundable": True}}, "policy.refundable: missing (expected True)"),
        ({"items": [{"sku": "LM-AU-009"}]}, "items: no item matches {'sku': 'LM-AU-009'}"),
        ({"items.5.sku": "x"}, "items.5.sku: missing"),
        ({"status": {"code": "x"}}, "status: expected an object, got 'delivered'"),
    ],
)
def test_subset_mismatches_say_where(expected: dict[str, Any], problem: str) -> None:
    problems = subset_problems(expected, ORDER)
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_numbers_match_the_same_number_written_as_text() -> None:
    assert subset_problems({"qty": 1, "price": 9.5}, {"qty": "1", "price": "9.5"}) == []
    assert subset_problems({"flag": True}, {"flag": "True"}) != []


CALLS = [
    {"action": "verify_identity", "args": {"order_id": "LM26110625", "phone": "***"}, "write": False, "ok": True},
    {
        "action": "create_return",
        "args": {"order_id": "LM26110625", "reason_code": "no_reason"},
        "write": True,
        "ok": False,
        "error_code": "outside_return_window",
    },
]


def test_turn_checks_report_each_broken_expectation() -> None:
    reply = {"reply": "退货申请已提交，服务单号 AS261120001", "handoff": False, "intent": "return_request"}
    turn = Turn.model_validate(
        {
            "say": "确认",
            "contains": ["退货申请已提交", "ＡＳ"],  # full-width letters match their ASCII forms
            "contains_any": ["missing", "also missing"],
            "not_contains": "服务单号",
            "handoff": True,
            "intent": "return_request",
            "actions": [
                {"action": "verify_identity", "with": {"order_id": "LM26110625"}, "ok": True},
                {"action": "create_return", "with": {"reason_code": "no_reason"}, "ok": True},
                {"action": "create_return", "error_code": "outside_return_window"},
            ],
            "not_called": ["write", "get_order"],
        }
    )
    assert turn_problems(turn, reply, CALLS) == [
        "reply should contain one of ['missing', 'also missing']",
        "reply should not contain '服务单号'",
        "expected a handoff to a person",
        "expected a call create_return with {'reason_code': 'no_reason'} succeeding",
        "a write action should not be called, got create_return",
    ]
    assert turn_problems(Turn(say="hi", not_called=["verify_identity"]), reply, CALLS) == [
        "'verify_identity' should not be called, got verify_identity"
    ]


# ---- running -----------------------------------------------------------------------------------------------------


async def test_a_failing_scenario_is_reported_with_its_turn_and_the_reply(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_SCENARIOS)
    settings = make_settings(tmp_path)
    seen: list[str] = []
    async with demo_backend(DEMO_SHOP) as shop:
        report = await run_scenarios(
            path,
            settings,
            llm=ScriptedLLM(default_reply="scripted"),
            transports={"shop": shop},
            progress=lambda result: seen.append(result.name),
        )
    assert seen == ["status_after_verification", "status_expected_too_early"]
    assert [r.passed for r in report.results] == [True, False]
    assert (report.passed, report.total, report.rate) == (1, 2, 0.5)
    failure = report.results[1].failure
    assert failure is not None and failure.turn == 1 and failure.say == "帮我查一下订单 LM26110625 的状态"
    assert failure.problems == ["reply should contain '已签收'"]
    assert failure.reply is not None and "手机号" in failure.reply
    text = report.failures_text()
    assert "✗ status_expected_too_early (zh)" in text and "turn 1" in text and "手机号" in text
    assert report.summary().startswith("1/2 (50.0%) scenarios passed")
    assert json.loads(json.dumps(report.as_dict()))["scenarios"][1]["failure"]["turn"] == 1


async def test_end_state_checks_read_the_backend_and_count_its_writes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + """\
  - name: cancel_counts_one_write
    language: zh
    turns:
      - say: 我要取消订单 LM26111117
      - say: "1408"
      - say: 确认
        contains: 已取消
    backend:
      - {action: get_order, with: {order_id: LM26111117}, expect: {status: processing}}
      - {action: get_order, with: {order_id: LM26119999}, error_code: order_not_found}
    writes: {LM26111117: 0, LM26110625: 0}
  - name: the_reset_undid_the_cancellation
    language: zh
    turns: [{say: 你好}]
    backend:
      - {action: get_order, with: {order_id: LM26111117}, expect: {status: processing}}
    writes: 0
""",
    )
    async with demo_backend(DEMO_SHOP) as shop:
        report = await run_scenarios(
            path, make_settings(tmp_path), llm=ScriptedLLM(default_reply="您好"), transports={"shop": shop}
        )
    first, second = report.results
    assert first.failure is not None and first.failure.turn is None
    assert first.failure.problems == [
        "get_order(order_id=LM26111117): status: expected 'processing', got 'cancelled'",
        "expected 0 write(s) on order LM26111117, the backend logged 1",
    ]
    assert "after the conversation" in report.failures_text()
    assert second.passed


# ---- the command line --------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kefu as the CLI builds it from the environment: the demo shop, a scratch data dir, cached models."""
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KEFU_SHOP__DIR", str(DEMO_SHOP))
    monkeypatch.setenv("KEFU_UNDERSTANDING__CACHE_DIR", str(UNDERSTANDING_CACHE))
    monkeypatch.setenv("KEFU_UNDERSTANDING__LLM_FALLBACK", "false")
    monkeypatch.setenv("KEFU_GUARDS__CACHE_DIR", str(GUARDS_CACHE))


def test_cli_exit_status_report_and_json(tmp_path: Path, cli_env: None) -> None:
    path = write(tmp_path, TWO_SCENARIOS)
    report_path = tmp_path / "report.json"
    runner = CliRunner()
    args = ["eval", "scenarios", str(path), "--demo-backend", "--llm", "scripted"]
    failed = runner.invoke(app, [*args, "--json", str(report_path)])
    assert failed.exit_code == 1, failed.output
    assert "✓ status_after_verification" in failed.output and "✗ status_expected_too_early" in failed.output
    assert "turn 1: customer said '帮我查一下订单 LM26110625 的状态'" in failed.output
    assert "reply should contain '已签收'" in failed.output and "reply: '" in failed.output
    assert "1/2 (50.0%) scenarios passed" in failed.output
    written = json.loads(report_path.read_text(encoding="utf-8"))
    assert (written["passed"], written["total"], written["rate"]) == (1, 2, 0.5)
    passed = runner.invoke(app, [*args, "-k", "after_verification"])
    assert passed.exit_code == 0, passed.output
    assert "1/1 (100.0%) scenarios passed" in passed.output


def test_cli_exits_2_for_a_bad_file_or_an_unknown_scenario(tmp_path: Path, cli_env: None) -> None:
    runner = CliRunner()
    bad = write(tmp_path, HEADER + "  - name: x\n    language: fr\n    turns: [{say: hi}]\n")
    result = runner.invoke(app, ["eval", "scenarios", str(bad), "--llm", "scripted"])
    assert result.exit_code == 2
    assert f"{bad}:7: scenarios.0.language" in result.output
    good = write(tmp_path, TWO_SCENARIOS, "good.yaml")
    unknown = runner.invoke(app, ["eval", "scenarios", str(good), "--only", "nope", "--llm", "scripted"])
    assert unknown.exit_code == 2 and "no scenario named 'nope'" in unknown.output
    missing = runner.invoke(app, ["eval", "scenarios", str(tmp_path / "absent.yaml")])
    assert missing.exit_code == 2 and "file not found" in missing.output
