"""The embedded backend against the real bundled model: replies, streaming, JSON, tools, concurrency, cancel."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from kefu.config import LLMBackendSettings
from kefu.errors import ConfigError, LLMHTTPError, LLMUnavailableError
from kefu.llm.base import LLMBackend
from kefu.llm.types import (
    Completion,
    GenerationOptions,
    Message,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolSpec,
)

pytest.importorskip("xllamacpp")
from kefu.llm.embedded import EmbeddedLLM

pytestmark = pytest.mark.llm

_DATA_DIR = Path(__file__).resolve().parents[2] / ".kefu"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_SYSTEM = Message("system", "你是一家网店的客服助手。回答要简短、礼貌。")
_SHORT = GenerationOptions(max_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def backend() -> Iterator[EmbeddedLLM]:
    # Loaded once for the module: ~2 s and ~1.9 GB; n_ctx 2048 leaves 1024 tokens per slot.
    llm = EmbeddedLLM.from_settings(LLMBackendSettings(n_ctx=2048, n_parallel=2), _DATA_DIR)
    yield llm
    asyncio.run(llm.aclose())


async def _collect(stream: AsyncGenerator[StreamEvent, None]) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    done: list[Completion] = []
    async with aclosing(stream) as events:
        async for event in events:
            assert not done, "nothing may follow StreamDone"
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            else:
                done.append(event.completion)
    assert len(done) == 1
    return deltas, done[0]


async def _until_idle(backend: EmbeddedLLM, within_s: float) -> None:
    started = time.perf_counter()
    while backend.active_requests:
        assert time.perf_counter() - started < within_s, "llama.cpp kept working on a cancelled request"
        await asyncio.sleep(0.05)


def test_implements_the_backend_protocol(backend: EmbeddedLLM) -> None:
    assert isinstance(backend, LLMBackend)
    assert backend.model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert backend.name == "embedded:qwen2.5-coder-1.5b-instruct-q4_k_m"


async def test_chinese_question_gets_a_chinese_reply_with_usage(backend: EmbeddedLLM) -> None:
    completion = await backend.complete([_SYSTEM, Message("user", "你们一般几天发货？")], _SHORT)

    assert completion.text.strip()
    assert _CJK.search(completion.text), completion.text
    assert completion.model == backend.model
    assert completion.usage.prompt_tokens > 10
    assert 0 < completion.usage.completion_tokens <= 24
    assert completion.finish_reason in {"stop", "length"}


async def test_stream_deltas_concatenate_to_the_final_text(backend: EmbeddedLLM) -> None:
    deltas, completion = await _collect(
        backend.stream([_SYSTEM, Message("user", "请介绍一下你们的退货政策。")], _SHORT)
    )

    assert len(deltas) >= 3
    assert "".join(deltas) == completion.text
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0


async def test_json_schema_reply_parses_and_matches_the_schema(backend: EmbeddedLLM) -> None:
    schema = {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": ["order_status", "refund", "other"]},
            "urgent": {"type": "boolean"},
        },
        "required": ["intent", "urgent"],
        "additionalProperties": False,
    }
    completion = await backend.complete(
        [Message("system", "Classify the customer's message."), Message("user", "我要退款，东西坏了")],
        GenerationOptions(max_tokens=40, temperature=0, json_schema=schema),
    )

    reply = json.loads(completion.text)
    assert set(reply) == {"intent", "urgent"}
    assert reply["intent"] in {"order_status", "refund", "other"}
    assert isinstance(reply["urgent"], bool)


async def test_tools_map_to_tool_calls(backend: EmbeddedLLM) -> None:
    order_tool = ToolSpec(
        "get_order_status",
        "查询订单状态 / look up an order",
        {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    )

    completion = await backend.complete(
        [_SYSTEM, Message("user", "帮我查一下订单 A12345 的状态")],
        GenerationOptions(max_tokens=40, temperature=0, tools=[order_tool]),
    )

    assert completion.finish_reason == "tool_calls"
    assert [call.name for call in completion.tool_calls] == ["get_order_status"]
    assert "A12345" in completion.tool_calls[0].arguments["order_id"]


async def test_two_streams_are_served_at_the_same_time(backend: EmbeddedLLM) -> None:
    first_delta_at: dict[str, float] = {}
    done_at: dict[str, float] = {}

    async def run(key: str, question: str) -> Completion:
        async with aclosing(backend.stream([_SYSTEM, Message("user", question)], _SHORT)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    first_delta_at.setdefault(key, time.perf_counter())
                elif isinstance(event, StreamDone):
                    done_at[key] = time.perf_counter()
                    return event.completion
        raise AssertionError("stream ended without StreamDone")

    a, b = await asyncio.gather(run("a", "怎么修改收货地址？"), run("b", "可以开发票吗？"))

    assert a.text and b.text
    # Each stream produced text before the other finished: two slots, not one queue.
    assert first_delta_at["a"] < done_at["b"]
    assert first_delta_at["b"] < done_at["a"]


async def test_cancelling_a_stream_stops_generation(backend: EmbeddedLLM) -> None:
    long_answer = GenerationOptions(max_tokens=400, temperature=0)
    received: list[str] = []

    async def consume() -> None:
        async with aclosing(
            backend.stream([Message("user", "请写一篇很长的文章，详细介绍杭州的历史和景点。")], long_answer)
        ) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    received.append(event.text)

    task = asyncio.create_task(consume())
    while len(received) < 3:
        assert not task.done()
        await asyncio.sleep(0.02)
    cancelled_at = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.perf_counter() - cancelled_at < 0.5
    # 400 tokens take ~18 s on an idle 2-core machine; a stopped request lets go within a token or
    # two (~0.05 s). The bound leaves room for a machine shared with other jobs.
    await _until_idle(backend, within_s=10.0)
    follow_up = await backend.complete([_SYSTEM, Message("user", "你好")], GenerationOptions(max_tokens=8))
    assert follow_up.text


async def test_a_timed_out_completion_is_stopped_too(backend: EmbeddedLLM) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await backend.complete(
                [Message("user", "Write a long essay about the history of tea.")],
                GenerationOptions(max_tokens=400, temperature=0),
            )

    await _until_idle(backend, within_s=10.0)


async def test_runtime_errors_become_llm_errors(backend: EmbeddedLLM) -> None:
    with pytest.raises(LLMHTTPError) as too_long:
        await backend.complete([Message("user", "你好" * 1500)], _SHORT)
    assert too_long.value.status_code == 400
    assert "context" in str(too_long.value)

    with pytest.raises(LLMHTTPError):
        await backend.complete([Message("user", "hi")], GenerationOptions(json_schema={"type": "no-such-type"}))


async def test_check_reports_the_model(backend: EmbeddedLLM) -> None:
    status = await backend.check()

    assert "qwen2.5-coder-1.5b-instruct-q4_k_m" in status
    assert "2 slots" in status


async def test_closing_stops_running_requests_and_refuses_new_ones() -> None:
    llm = EmbeddedLLM.from_settings(LLMBackendSettings(n_ctx=512, n_parallel=1), _DATA_DIR)
    running = asyncio.create_task(
        llm.complete([Message("user", "请写一篇很长的文章介绍杭州。")], GenerationOptions(max_tokens=300))
    )
    for _ in range(500):
        if llm.active_requests:
            break
        await asyncio.sleep(0.02)

    await llm.aclose()
    await llm.aclose()  # idempotent

    with pytest.raises(LLMUnavailableError):
        await running
    with pytest.raises(LLMUnavailableError):
        await llm.complete([Message("user", "你好")], _SHORT)


def test_a_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    settings = LLMBackendSettings(model_path=tmp_path / "missing.gguf")

    with pytest.raises(ConfigError, match="KEFU_LLM__MODEL_PATH"):
        EmbeddedLLM.from_settings(settings, tmp_path)
