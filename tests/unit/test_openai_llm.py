"""The OpenAI-compatible adapter against `httpx.MockTransport`: wire format, parsing, retries, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

import kefu
from kefu.config import LLMBackendSettings
from kefu.errors import (
    CircuitOpenError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from kefu.llm.base import LLMBackend
from kefu.llm.openai import OpenAICompatibleLLM
from kefu.llm.resilience import RetryPolicy
from kefu.llm.types import (
    Completion,
    GenerationOptions,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
)

BASE_URL = "http://vllm.internal:8000/v1"
API_KEY = "sk-test-3f9a7c1e-never-show-me"
FAST_RETRIES = RetryPolicy(max_retries=2, base_delay_s=0.001, max_delay_s=0.01)

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Recorder:
    """Records every request the adapter sends, and every pause it takes between retries."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.pauses: list[float] = []

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def make_llm(recorder: Recorder) -> AsyncIterator[Callable[..., OpenAICompatibleLLM]]:
    transports: list[httpx.MockTransport] = []

    def build(
        *responses: httpx.Response | Exception | Handler,
        retry_policy: RetryPolicy = FAST_RETRIES,
        **settings: Any,
    ) -> OpenAICompatibleLLM:
        """An adapter whose endpoint answers with `responses` in order (a response, an error to raise, a handler)."""
        queue = list(responses)

        async def handle(request: httpx.Request) -> httpx.Response:
            recorder.requests.append(request)
            outcome = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(outcome, Exception):
                raise outcome
            if isinstance(outcome, httpx.Response):
                return outcome
            return await outcome(request)

        transport = httpx.MockTransport(handle)
        transports.append(transport)
        config = LLMBackendSettings(
            backend="openai",
            base_url=BASE_URL,
            model="qwen3-8b",
            api_key=API_KEY,
            max_tokens=64,
            temperature=0.2,
            **settings,
        )
        return OpenAICompatibleLLM(config, transport, retry_policy=retry_policy, sleep=recorder.sleep)

    yield build
    for transport in transports:
        await transport.aclose()


def chat_response(content: str | None = "您好，有什么可以帮您？", **extra: Any) -> httpx.Response:
    message: dict[str, Any] = {"role": "assistant", "content": content, **extra.pop("message", {})}
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "Qwen/Qwen3-8B",
        "choices": [{"index": 0, "message": message, "finish_reason": extra.pop("finish_reason", "stop")}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
        **extra,
    }
    return httpx.Response(200, json=body)


def sse_response(*chunks: dict[str, Any] | str) -> httpx.Response:
    lines = [f"data: {c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content="".join(lines).encode())


def delta(content: str | None = None, *, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    choice_delta: dict[str, Any] = {**fields}
    if content is not None:
        choice_delta["content"] = content
    return {"model": "Qwen/Qwen3-8B", "choices": [{"index": 0, "delta": choice_delta, "finish_reason": finish}]}


USAGE_CHUNK = {"model": "Qwen/Qwen3-8B", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
HELLO = [Message("user", "你好")]
DEFAULTS = GenerationOptions()


async def collect(events: AsyncIterator[StreamEvent]) -> tuple[list[str], Completion]:
    texts: list[str] = []
    done: list[Completion] = []
    async for event in events:
        if isinstance(event, TextDelta):
            assert not done, "a delta arrived after StreamDone"
            texts.append(event.text)
        else:
            done.append(event.completion)
    assert len(done) == 1, "exactly one StreamDone ends a stream"
    return texts, done[0]


# --- wire format -----------------------------------------------------------------------------------


async def test_implements_the_backend_protocol(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    llm = make_llm(chat_response())
    assert isinstance(llm, LLMBackend)
    assert llm.name == "openai:qwen3-8b"
    assert llm.model == "qwen3-8b"


async def test_request_body_maps_messages_tools_and_options(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llm = make_llm(chat_response())
    lookup = ToolCall(id="call_7", name="order_status", arguments={"order_id": "A1001", "备注": "加急"})
    messages = [
        Message("system", "你是客服。"),
        Message("user", "我的订单到哪了？"),
        Message("assistant", "", tool_calls=(lookup,)),
        Message("tool", '{"status": "shipped"}', tool_call_id="call_7"),
    ]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    tool = ToolSpec("order_status", "Look up an order", {"type": "object", "properties": {}})
    options = GenerationOptions(temperature=0.0, stop=["</s>"], seed=7, json_schema=schema, tools=[tool])

    await llm.complete(messages, options)

    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"kefu/{kefu.__version__}", "the model server's log names the caller"
    defaults = LLMBackendSettings(backend="openai", base_url=BASE_URL)
    assert request.extensions["timeout"] == {
        "connect": defaults.connect_timeout_s,
        "read": defaults.timeout_s,
        "write": defaults.timeout_s,
        "pool": defaults.timeout_s,
    }
    body = recorder.bodies()[0]
    assert body == {
        "model": "qwen3-8b",
        "messages": [
            {"role": "system", "content": "你是客服。"},
            {"role": "user", "content": "我的订单到哪了？"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_7",
                        "type": "function",
                        "function": {"name": "order_status", "arguments": '{"order_id": "A1001", "备注": "加急"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "call_7"},
        ],
        "max_tokens": 64,
        "temperature": 0.0,
        "stop": ["</s>"],
        "seed": 7,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "order_status",
                    "description": "Look up an order",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema, "strict": True},
        },
    }


async def test_settings_fill_in_unset_options_and_no_key_means_no_auth_header(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llm = make_llm(chat_response())
    llm_without_key = OpenAICompatibleLLM(
        LLMBackendSettings(backend="openai", base_url=BASE_URL + "/"), llm._transport, sleep=recorder.sleep
    )

    await llm.complete(HELLO, GenerationOptions(max_tokens=5))
    await llm_without_key.complete(HELLO, DEFAULTS)

    first, second = recorder.bodies()
    assert (first["max_tokens"], first["temperature"]) == (5, 0.2)
    assert "stream" not in first and "tools" not in first and "response_format" not in first
    assert (second["max_tokens"], second["temperature"]) == (384, 0.3)
    assert str(recorder.requests[1].url) == f"{BASE_URL}/chat/completions"
    assert "authorization" not in recorder.requests[1].headers


async def test_cache_prompt_is_sent_only_when_configured(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llamacpp = make_llm(chat_response(), cache_prompt=True)
    await llamacpp.complete(HELLO, DEFAULTS)
    await make_llm(chat_response()).complete(HELLO, DEFAULTS)  # OpenAI itself rejects fields it does not know

    llamacpp_body, plain_body = recorder.bodies()
    assert llamacpp_body["cache_prompt"] is True
    assert "cache_prompt" not in plain_body


# --- non-streaming replies ------------------------------------------------------------------------------


async def test_completion_is_parsed(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    llm = make_llm(chat_response("您好，有什么可以帮您？", finish_reason="stop"))

    completion = await llm.complete(HELLO, DEFAULTS)

    assert completion.text == "您好，有什么可以帮您？"
    assert completion.model == "Qwen/Qwen3-8B"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (21, 9)
    assert completion.finish_reason == "stop"
    assert completion.tool_calls == ()


async def test_tool_calls_are_parsed_from_a_completion(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    tool_calls = [
        {"id": "call_9", "type": "function", "function": {"name": "order_status", "arguments": '{"order_id": "A1"}'}},
        # Some servers send the arguments as an object and leave the id out.
        {"type": "function", "function": {"name": "handoff", "arguments": {"reason": "想找人工"}}},
    ]
    llm = make_llm(chat_response(None, message={"tool_calls": tool_calls}, finish_reason="tool_calls"))

    completion = await llm.complete(HELLO, DEFAULTS)

    assert completion.text == ""
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCall(id="call_9", name="order_status", arguments={"order_id": "A1"}),
        ToolCall(id="call_1", name="handoff", arguments={"reason": "想找人工"}),
    )


async def test_missing_usage_reads_as_zero(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    body = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}
    llm = make_llm(httpx.Response(200, json=body))

    completion = await llm.complete(HELLO, DEFAULTS)

    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (0, 0)
    assert completion.finish_reason == "stop"


# --- streaming ----------------------------------------------------------------------------------------------


async def test_stream_yields_deltas_then_done_with_usage(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llm = make_llm(
        sse_response(
            delta(role="assistant"),
            delta("您好"),
            delta("，"),
            delta("请问"),
            delta(finish="stop"),
            USAGE_CHUNK,
            "[DONE]",
        )
    )

    texts, completion = await collect(llm.stream(HELLO, DEFAULTS))

    assert texts == ["您好", "，", "请问"]
    assert completion.text == "您好，请问"
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 3)
    body = recorder.bodies()[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert recorder.requests[0].headers["accept"] == "text/event-stream"


async def test_stream_without_usage_reports_zeros(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    llm = make_llm(sse_response(delta("ok"), delta(finish="length"), "[DONE]"))

    _, completion = await collect(llm.stream(HELLO, DEFAULTS))

    assert completion.finish_reason == "length"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (0, 0)


async def test_streamed_tool_call_fragments_are_accumulated(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    def fragment(index: int, **function: str) -> dict[str, Any]:
        return {"index": index, "function": function}

    first = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "order_status", "arguments": ""}}
    second = {"index": 1, "id": "call_b", "type": "function", "function": {"name": "handoff"}}
    llm = make_llm(
        sse_response(
            delta(role="assistant", tool_calls=[first]),
            delta(tool_calls=[fragment(0, arguments='{"order')]),
            delta(tool_calls=[second]),
            delta(tool_calls=[fragment(0, arguments='_id": "A1')]),
            delta(tool_calls=[fragment(1, arguments='{"reason": "投诉"}')]),
            delta(tool_calls=[fragment(0, arguments='001"}')]),
            delta(finish="tool_calls"),
            USAGE_CHUNK,
            "[DONE]",
        )
    )

    texts, completion = await collect(llm.stream(HELLO, DEFAULTS))

    assert texts == []
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCall(id="call_a", name="order_status", arguments={"order_id": "A1001"}),
        ToolCall(id="call_b", name="handoff", arguments={"reason": "投诉"}),
    )


async def test_stream_that_ends_before_the_model_finished_is_an_error(
    make_llm: Callable[..., OpenAICompatibleLLM],
) -> None:
    llm = make_llm(sse_response(delta("半句")), retry_policy=RetryPolicy(max_retries=0))

    with pytest.raises(LLMResponseError, match="closed the stream before the model finished"):
        await collect(llm.stream(HELLO, DEFAULTS))


async def test_error_event_mid_stream_is_an_error(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    llm = make_llm(sse_response(delta("a"), {"error": {"code": 500, "message": "KV cache full"}}))

    with pytest.raises(LLMResponseError, match="KV cache full"):
        await collect(llm.stream(HELLO, DEFAULTS))


class BrokenStream(httpx.AsyncByteStream):
    """A response body that sends `chunks`, then either fails or stalls until cancelled."""

    def __init__(self, chunks: list[bytes], *, then: Exception | None = None) -> None:
        self.chunks = chunks
        self.then = then
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.then is not None:
            raise self.then
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


def streaming(body: BrokenStream) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)


async def test_stream_failing_before_any_delta_is_retried(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    role_only = f"data: {json.dumps(delta(role='assistant'))}\n\n".encode()
    llm = make_llm(
        httpx.Response(503, text="loading model"),
        streaming(BrokenStream([role_only], then=httpx.ReadError("connection reset"))),
        sse_response(delta("好的"), delta(finish="stop"), "[DONE]"),
    )

    texts, completion = await collect(llm.stream(HELLO, DEFAULTS))

    assert texts == ["好的"]
    assert completion.text == "好的"
    assert len(recorder.requests) == 3
    assert len(recorder.pauses) == 2


async def test_stream_failing_after_a_delta_is_not_retried(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    first = f"data: {json.dumps(delta('您好'))}\n\n".encode()
    body = BrokenStream([first], then=httpx.RemoteProtocolError("peer closed connection"))
    llm = make_llm(streaming(body), sse_response(delta("never"), delta(finish="stop"), "[DONE]"))
    received: list[StreamEvent] = []

    with pytest.raises(LLMUnavailableError, match="mid-stream") as info:
        async for event in llm.stream(HELLO, DEFAULTS):
            received.append(event)

    assert received == [TextDelta("您好")]
    assert len(recorder.requests) == 1
    assert BASE_URL in str(info.value)
    assert body.closed


async def test_cancelling_the_caller_closes_the_http_stream(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    body = BrokenStream([f"data: {json.dumps(delta('您好'))}\n\n".encode()])
    llm = make_llm(streaming(body))
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.stream(HELLO, DEFAULTS):
            first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert body.closed


async def test_a_consumer_that_stops_early_closes_the_http_stream(
    make_llm: Callable[..., OpenAICompatibleLLM],
) -> None:
    body = BrokenStream([f"data: {json.dumps(delta('您好'))}\n\n".encode()])
    llm = make_llm(streaming(body))

    events = llm.stream(HELLO, DEFAULTS)
    assert await anext(events) == TextDelta("您好")
    await events.aclose()  # type: ignore[attr-defined]

    assert body.closed
    assert llm.breaker.consecutive_failures == 0


async def test_a_non_event_stream_answer_is_a_response_error(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    llm = make_llm(httpx.Response(200, json={"choices": []}))

    with pytest.raises(LLMResponseError, match="did not answer with an event stream"):
        await collect(llm.stream(HELLO, DEFAULTS))


# --- retries -------------------------------------------------------------------------------------------------


async def test_503_is_retried_then_succeeds(make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder) -> None:
    llm = make_llm(httpx.Response(503, text="overloaded"), httpx.Response(503, text="overloaded"), chat_response("好"))

    completion = await llm.complete(HELLO, DEFAULTS)

    assert completion.text == "好"
    assert len(recorder.requests) == 3
    assert len(recorder.pauses) == 2
    assert all(0 < p <= FAST_RETRIES.max_delay_s for p in recorder.pauses)


async def test_429_waits_as_long_as_retry_after_says(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    throttled = httpx.Response(429, headers={"retry-after": "2"}, json={"error": "rate limited"})
    llm = make_llm(throttled, chat_response("好"), retry_policy=RetryPolicy(max_retries=2, max_delay_s=5.0))

    assert (await llm.complete(HELLO, DEFAULTS)).text == "好"
    assert recorder.pauses == [2.0]


async def test_retries_run_out_with_the_last_status(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llm = make_llm(httpx.Response(502, text="bad gateway"))

    with pytest.raises(LLMHTTPError) as info:
        await llm.complete(HELLO, DEFAULTS)

    assert info.value.status_code == 502
    assert len(recorder.requests) == 1 + FAST_RETRIES.max_retries


async def test_400_is_never_retried(make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder) -> None:
    llm = make_llm(httpx.Response(400, json={"error": {"message": "max_tokens is too large"}}))

    with pytest.raises(LLMHTTPError) as info:
        await llm.complete(HELLO, DEFAULTS)

    assert info.value.status_code == 400
    assert "max_tokens is too large" in info.value.body
    assert "vllm.internal:8000" in str(info.value)
    assert len(recorder.requests) == 1
    assert recorder.pauses == []


async def test_connection_refused_is_retried_then_reported(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llm = make_llm(httpx.ConnectError("[Errno 111] Connection refused"))

    with pytest.raises(LLMUnavailableError, match=r"cannot connect to LLM endpoint http://vllm.internal:8000/v1"):
        await llm.complete(HELLO, DEFAULTS)
    assert len(recorder.requests) == 3


# --- error mapping ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "expected", "words"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), LLMUnavailableError, "cannot connect"),
        (httpx.ConnectTimeout("timed out"), LLMTimeoutError, "did not accept a connection within 5s"),
        (httpx.ReadTimeout("timed out"), LLMTimeoutError, "sent nothing for 60s"),
        (httpx.RemoteProtocolError("Server disconnected"), LLMUnavailableError, "lost the connection"),
        (httpx.Response(500, text="CUDA out of memory"), LLMHTTPError, "HTTP 500: CUDA out of memory"),
        (httpx.Response(200, text="<html>proxy login</html>"), LLMResponseError, "invalid JSON"),
        (httpx.Response(200, json={"object": "error"}), LLMResponseError, "without choices[0].message"),
    ],
)
async def test_failures_map_to_llm_errors_naming_the_endpoint(
    make_llm: Callable[..., OpenAICompatibleLLM],
    failure: httpx.Response | Exception,
    expected: type[LLMError],
    words: str,
) -> None:
    llm = make_llm(failure, retry_policy=RetryPolicy(max_retries=0))

    with pytest.raises(expected) as info:
        await llm.complete(HELLO, DEFAULTS)

    assert words in str(info.value)
    assert "vllm.internal:8000" in str(info.value)


async def test_tool_arguments_that_are_not_json_are_a_response_error(
    make_llm: Callable[..., OpenAICompatibleLLM],
) -> None:
    bad = [{"id": "c", "type": "function", "function": {"name": "order_status", "arguments": "{order: A1"}}]
    llm = make_llm(chat_response(None, message={"tool_calls": bad}))

    with pytest.raises(LLMResponseError, match="'order_status' with arguments that are not JSON"):
        await llm.complete(HELLO, DEFAULTS)


async def test_the_api_key_never_appears_in_errors(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    async def echo_headers(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f"invalid credentials: {request.headers['authorization']}")

    failures: list[httpx.Response | Exception | Handler] = [
        echo_headers,
        httpx.ConnectError(f"proxy refused Bearer {API_KEY}"),
        httpx.Response(200, text=f"not json {API_KEY}"),
    ]
    for failure in failures:
        llm = make_llm(failure, retry_policy=RetryPolicy(max_retries=0))
        with pytest.raises(LLMError) as info:
            await llm.complete(HELLO, DEFAULTS)
        assert API_KEY not in str(info.value)
        assert API_KEY not in repr(info.value.args)
        assert API_KEY not in getattr(info.value, "body", "")


async def test_userinfo_in_base_url_is_not_shown(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    llm = make_llm(httpx.ConnectError("refused"), retry_policy=RetryPolicy(max_retries=0))
    other = OpenAICompatibleLLM(
        LLMBackendSettings(backend="openai", base_url="https://bob:hunter2@llm.example.com/v1"),
        llm._transport,
        retry_policy=RetryPolicy(max_retries=0),
    )

    with pytest.raises(LLMUnavailableError) as info:
        await other.complete(HELLO, DEFAULTS)

    assert "llm.example.com" in str(info.value)
    assert "hunter2" not in str(info.value)


# --- circuit breaker ---------------------------------------------------------------------------------------------


async def test_breaker_opens_after_repeated_failures_and_stops_calling(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llm = make_llm(
        httpx.Response(503, text="down"),
        retry_policy=RetryPolicy(max_retries=0),
        circuit_failure_threshold=2,
        circuit_reset_s=60,
    )
    for _ in range(2):
        with pytest.raises(LLMHTTPError):
            await llm.complete(HELLO, DEFAULTS)

    with pytest.raises(CircuitOpenError, match="openai:qwen3-8b"):
        await llm.complete(HELLO, DEFAULTS)
    with pytest.raises(CircuitOpenError):
        await collect(llm.stream(HELLO, DEFAULTS))
    assert len(recorder.requests) == 2


# --- check and lifecycle -------------------------------------------------------------------------------------------


async def test_check_lists_the_served_models(make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder) -> None:
    models = {"object": "list", "data": [{"id": "qwen3-8b"}, {"id": "qwen3-8b-lora-shop"}]}
    llm = make_llm(httpx.Response(200, json=models))

    status = await llm.check()

    assert str(recorder.requests[0].url) == f"{BASE_URL}/models"
    assert recorder.requests[0].method == "GET"
    assert "\n" not in status
    assert status.startswith(f"{BASE_URL}: up")
    assert "qwen3-8b-lora-shop" in status
    assert "'qwen3-8b' listed" in status


async def test_check_falls_back_to_a_one_token_completion(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    llm = make_llm(httpx.Response(404, text="not found"), chat_response("p"))

    status = await llm.check()

    assert "no /models" in status
    assert [(r.method, r.url.path) for r in recorder.requests] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    assert json.loads(recorder.requests[1].content)["max_tokens"] == 1


async def test_check_raises_when_the_endpoint_is_down(make_llm: Callable[..., OpenAICompatibleLLM]) -> None:
    llm = make_llm(httpx.ConnectError("[Errno 111] Connection refused"))

    with pytest.raises(LLMUnavailableError, match=r"vllm\.internal:8000"):
        await llm.check()


async def test_aclose_closes_only_a_connection_pool_it_created(
    make_llm: Callable[..., OpenAICompatibleLLM], recorder: Recorder
) -> None:
    injected = make_llm(chat_response())
    owned = OpenAICompatibleLLM.from_settings(
        LLMBackendSettings(backend="openai", base_url="http://127.0.0.1:9/v1", timeout_s=12, connect_timeout_s=2)
    )
    with pytest.raises(LLMUnavailableError):
        await owned.complete(HELLO, DEFAULTS)  # nothing listens on port 9: the pool exists now

    await injected.aclose()
    await owned.aclose()

    await injected.complete(HELLO, DEFAULTS)
    assert len(recorder.requests) == 1, "an injected transport stays usable"
    pool = cast(AiohttpTransport, owned._transport).client
    assert isinstance(pool, aiohttp.ClientSession) and pool.closed
