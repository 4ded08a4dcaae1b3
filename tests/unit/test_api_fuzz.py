"""Schema-based fuzzing of kefu's HTTP API (schemathesis against its own OpenAPI): no input yields a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from tests.conftest import make_settings
from tests.support.live_server import live_server

_SKIP_STREAMS = ("/v1/chat/stream",)  # SSE responses are covered by their own tests


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    app: FastAPI = create_app(make_settings(Path(tmp)), llm=ScriptedLLM(default_reply="OK"))
    with live_server(app) as base:
        yield base


def test_no_generated_request_gets_a_server_error(fuzz_base: str) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_base}/openapi.json")
    failures: list[str] = []
    checked: list[int] = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        if op.path in _SKIP_STREAMS:
            continue

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzz_base, timeout=10)
            checked.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:200]}")

        check()
    assert len(checked) > 50  # the fuzzer really exercised the API
    assert failures == []
