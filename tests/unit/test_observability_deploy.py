"""The Grafana dashboard and the Prometheus alerts under deploy/ query what kefu really exports.

Every PromQL expression is parsed for real (`promql-parser`, the Rust parser GreptimeDB uses) and its metric names
are checked against the names in kefu's own /metrics after real turns. The alert rules also go through Prometheus's
`promtool`: `check rules`, then each alert's expression evaluated over synthetic series of a healthy and of a failing
kefu (it must stay quiet on the first and fire on the second).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kefu.api.app import create_app
from kefu.errors import LLMUnavailableError
from kefu.llm.testing import ScriptedLLM
from tests.conftest import IN_CI, REPO_ROOT, make_settings

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "kefu-dashboard.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_SYNTHETIC = {"up"}
"""Series Prometheus makes itself for every scrape target."""
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


async def _exported_names(tmp_path: Path) -> set[str]:
    llm = ScriptedLLM()
    # A gray release runs, so that its per-arm metrics are exported too.
    release = tmp_path / "release.yaml"
    release.write_text("experiments:\n  - id: prompts\n    share: 50\n    canary:\n      prompt_version: v1\n")
    app = create_app(make_settings(tmp_path, release={"file": release}), llm=llm)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            llm.queue("积分可以抵扣现金。", LLMUnavailableError("down"), "顺丰包邮。")
            await client.post("/v1/chat", json={"user_id": "d1", "text": "会员积分怎么用？"})
            await client.post("/v1/chat", json={"user_id": "d2", "text": "How is shipping charged?"})
            await client.post("/v1/chat/stream", json={"user_id": "d3", "text": "多久能到？"})
            await client.post("/v1/chat", json={"user_id": "d4", "text": "转人工"})
            text = (await client.get("/metrics")).text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name kefu's /metrics has after an answered, a failed, a streamed and a handed-off turn."""
    return asyncio.run(_exported_names(tmp_path_factory.mktemp("exported")))


def _grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced the way Grafana does before the query reaches Prometheus."""
    return expr.replace("$__rate_interval", "1m").replace("$job", ".*")


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def test_the_exported_names_cover_every_kind_of_metric(exported: set[str]) -> None:
    assert {"kefu_turns_total", "kefu_turn_duration_seconds_bucket", "kefu_handoff_queue_length"} <= exported
    assert {"kefu_websockets_active", "kefu_llm_circuit_open", "kefu_handoffs_total"} <= exported
    assert not {"kefu_turns", "up"} & exported


def test_the_dashboard_queries_only_what_kefu_exports(exported: set[str]) -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    queried: set[str] = set()
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = _metric_names(_grafana_to_promql(target["expr"]))
            assert names and names <= exported, f"{panel['title']}: {target['expr']} queries {names - exported}"
            assert 'job=~"$job"' in target["expr"], f"{panel['title']}: not filtered by the job variable"
            queried |= names
    assert _metric_names(variables["job"]["definition"].removeprefix("label_values(").split(",")[0]) <= exported
    # Every metric kefu records has a panel.
    recorded = {name for name in exported if not name.endswith("_created")}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in recorded}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in queried}
    assert families <= shown, f"no panel for {families - shown}"


def test_the_dashboard_has_the_panels_an_operator_looks_for() -> None:
    titles = " | ".join(panel["title"].lower() for panel in _panels())
    for wanted in (
        "turns / s by route",
        "p50 / p95 / p99",
        "stage latency",
        "first token",
        "errors / s by kind",
        "handoffs / s by reason",
        "intents",
        "tokens / s by model",
        "handoff queue",
        "websockets",
    ):
        assert wanted in titles, wanted
    grid = [panel["gridPos"] for panel in _dashboard()["panels"]]
    assert all(0 <= pos["x"] and pos["x"] + pos["w"] <= 24 for pos in grid)
    assert len({panel["id"] for panel in _dashboard()["panels"]}) == len(grid)


def test_alerts_are_prometheus_rule_groups_over_kefus_metrics(exported: set[str]) -> None:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names))
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"], group["name"]
    rules = _rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        names = _metric_names(rule["expr"])
        assert names <= exported | PROMETHEUS_SYNTHETIC, f"{rule['alert']} queries {names - exported}"
    by_name = {rule["alert"]: rule for rule in rules}
    assert "kefu_turn_duration_seconds_bucket" in by_name["KefuTurnLatencyHigh"]["expr"]
    assert "kefu_turn_errors_total" in by_name["KefuErrorRateHigh"]["expr"]
    assert "offset" in by_name["KefuHandoffSpike"]["expr"], "a spike is measured against a baseline"
    assert (
        "llm_" in by_name["KefuLLMBackendDown"]["expr"]
        and "kefu_llm_circuit_open" in by_name["KefuLLMBackendDown"]["expr"]
    )
    assert "kefu_handoff_queue_length" in by_name["KefuHandoffQueueLong"]["expr"]


# ---- promtool ----


def _promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path=sysconfig.get_path("scripts"))
    if found is None:
        message = "promtool (Prometheus's rule checker) is missing; `make test-deps` puts it in .venv/bin"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False, env={"PATH": os.defpath}
    )


def test_promtool_accepts_the_rules() -> None:
    result = _run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def _series(rate_per_min: float, minutes: int) -> str:
    return f"0+{rate_per_min}x{minutes}"


def _latency(name: str, slow: bool, minutes: int, per_min: int = 10) -> list[dict[str, str]]:
    """A histogram whose observations all fall in (1, 2] seconds, or all in (15, 30] seconds when slow."""
    fast_le, slow_le = ("2.0", "30.0")
    buckets = ("1.0", "2.0", "15.0", "30.0", "+Inf")
    values = []
    for le in buckets:
        reached = float(le) >= float(slow_le if slow else fast_le)
        values.append({"series": f'{name}_bucket{{le="{le}"}}', "values": _series(per_min if reached else 0, minutes)})
    return values


def _scenario(*, healthy: bool) -> list[dict[str, str]]:
    """A day and a half of a kefu with 10 turns a minute: healthy, or failing in every way the alerts watch."""
    day, spike = 1440, 40
    minutes = day + spike
    handoffs = f"0+1x{day} {day}+6x{spike - 1}" if not healthy else _series(1, minutes - 1)
    series = [
        {"series": 'kefu_turns_total{channel="web",route="llm"}', "values": _series(10, minutes)},
        {"series": 'kefu_turn_errors_total{kind="llm_unavailable"}', "values": _series(0 if healthy else 6, minutes)},
        {"series": 'kefu_turn_errors_total{kind="cancelled"}', "values": _series(1, minutes)},
        {"series": 'kefu_handoffs_total{reason="customer_request"}', "values": handoffs},
        {"series": 'kefu_http_requests_total{status="200"}', "values": _series(10, minutes)},
        {"series": 'kefu_http_requests_total{status="503"}', "values": _series(0 if healthy else 2, minutes)},
        {"series": 'kefu_handoff_queue_length{status="queued"}', "values": f"{3 if healthy else 30}x{minutes}"},
        {"series": "kefu_handoff_queue_oldest_wait_seconds", "values": f"{120 if healthy else 1200}x{minutes}"},
        {"series": 'kefu_llm_circuit_open{role="chat",model="qwen3-8b"}', "values": f"{0 if healthy else 1}x{minutes}"},
        {
            "series": 'kefu_llm_busy_total{backend="chat",reason="timeout"}',
            "values": _series(0 if healthy else 2, minutes),
        },
        {
            "series": 'kefu_release_rollbacks_total{experiment="new-model",trigger="auto"}',
            "values": f"0x{minutes - 20} 1x20" if not healthy else f"0x{minutes}",
        },
        {"series": 'up{job="kefu"}', "values": f"{1 if healthy else 0}x{minutes}"},
        {"series": 'up{job="vllm"}', "values": f"{1 if healthy else 0}x{minutes}"},
    ]
    series += _latency("kefu_turn_duration_seconds", not healthy, minutes)
    series += _latency("kefu_time_to_first_token_seconds", not healthy, minutes)
    return series


def test_every_alert_is_quiet_on_a_healthy_kefu_and_fires_on_a_failing_one(tmp_path: Path) -> None:
    eval_time = "1470m"  # a day of baseline, then 30 minutes of the scenario
    tests = [
        {
            "interval": "1m",
            "name": "healthy" if healthy else "failing",
            "input_series": _scenario(healthy=healthy),
            "promql_expr_test": [
                {
                    "expr": f"count({rule['expr'].strip()}) or vector(0)",
                    "eval_time": eval_time,
                    "exp_samples": [{"labels": "{}", "value": 0 if healthy else 1}],
                }
                for rule in _rules()
            ],
        }
        for healthy in (True, False)
    ]
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}), encoding="utf-8"
    )
    result = _run_promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
