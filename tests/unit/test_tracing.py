"""OpenTelemetry tracing of a turn: one span per turn, one child per stage, labels only (SDK's in-memory exporter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from kefu.api.app import create_app
from kefu.config import TracingSettings
from kefu.errors import ConfigError, LLMUnavailableError
from kefu.llm.testing import ScriptedLLM
from kefu.observability.tracing import build_tracer
from tests.conftest import make_settings

CUSTOMER_TEXT = "How is shipping charged?"


async def test_a_turn_is_one_span_with_a_child_per_stage(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    llm = ScriptedLLM(["Shipping is free over ¥99.", LLMUnavailableError("down")])
    app = create_app(make_settings(tmp_path, tracing={"enabled": True}), llm=llm, span_exporter=exporter)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            answered = await client.post("/v1/chat", json={"user_id": "t1", "text": CUSTOMER_TEXT})
            spans = list(exporter.get_finished_spans())
            failed = await client.post("/v1/chat", json={"user_id": "t2", "text": CUSTOMER_TEXT})
        stored = await app.state.services.store.list_messages(answered.json()["session_id"])

    [turn] = [span for span in spans if span.name == "kefu.turn"]
    stages = [span for span in spans if span.name.startswith("kefu.stage.")]
    # The stored reply has every stage's time but its own storing (persist), which the trace does have.
    assert [span.attributes["kefu.stage"] for span in stages] == [*stored[1].stage_latency_ms, "persist"]
    assert all(span.parent is not None and span.parent.span_id == turn.context.span_id for span in stages)
    assert all(span.context.trace_id == turn.context.trace_id for span in stages)
    attributes = dict(turn.attributes or {})
    assert attributes["kefu.route"] == stored[1].route == "llm"
    assert attributes["kefu.intent"] == stored[1].intent == answered.json()["intent"]
    assert attributes["kefu.channel"] == "web" and attributes["kefu.model"] == "scripted"
    assert attributes["kefu.session_id"] == answered.json()["session_id"]
    assert attributes["kefu.request_id"] == answered.headers["x-request-id"]
    generate = next(span for span in stages if span.attributes["kefu.stage"] == "generate")
    assert generate.attributes["kefu.route"] == "llm"
    every_value = [str(v) for span in spans for v in (span.attributes or {}).values()]
    assert not any("charged" in v for v in every_value), "no customer text in span attributes"

    later = [span for span in exporter.get_finished_spans() if span not in spans]
    [failed_turn] = [span for span in later if span.name == "kefu.turn"]
    assert failed_turn.attributes["kefu.error_code"] == failed.json()["error"] == "llm_unavailable"
    [failed_stage] = [span for span in later if span.name == "kefu.stage.generate"]
    assert failed_stage.status.status_code is StatusCode.ERROR
    assert failed_stage.attributes["error.type"] == "LLMUnavailableError"
    assert not failed_stage.events, "the exception (and its message) is not recorded on the span"


async def test_tracing_off_builds_no_tracer(tmp_path: Path) -> None:
    assert build_tracer(TracingSettings()) is None
    app = create_app(make_settings(tmp_path), llm=ScriptedLLM(["hi"]))
    async with app.router.lifespan_context(app):
        assert app.state.services.tracer is None


def test_enabling_tracing_without_the_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # what an install without the extra looks like
    with pytest.raises(ConfigError, match=r"pip install 'kefu\[otel\]'"):
        build_tracer(TracingSettings(enabled=True))


def test_kefu_serve_refuses_to_start_with_tracing_on_and_no_extra(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    env.update(
        {"KEFU_DATA_DIR": str(tmp_path), "KEFU_CONFIG": str(tmp_path / "none.yaml"), "KEFU_TRACING__ENABLED": "true"}
    )
    without_otel = (
        "import sys; sys.modules['opentelemetry.exporter.otlp.proto.grpc.trace_exporter'] = None; "
        "from kefu.cli.main import main; sys.argv = ['kefu', 'serve']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_otel], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "kefu[otel]" in result.stderr and "Traceback" not in result.stderr
