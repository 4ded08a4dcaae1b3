"""The OpenAI-compatible adapter against a real llama.cpp server on loopback, serving the bundled model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from kefu.config import LLMBackendSettings
from kefu.errors import LLMError, LLMUnavailableError
from kefu.llm.openai import OpenAICompatibleLLM
from kefu.llm.resilience import RetryPolicy
from kefu.llm.types import Completion, GenerationOptions, Message, StreamDone, TextDelta
from tests.support.llamacpp_server import LlamaCppServer, bundled_model_path, llamacpp_server

pytestmark = pytest.mark.llm

pytest.importorskip("xllamacpp", reason="the llama.cpp server comes with the 'embedded' extra (xllamacpp)")

SHORT = GenerationOptions(max_tokens=24, temperature=0.0, seed=7)
GREETING = [
    Message("system", "You are a polite customer-service assistant for an online shop. Answer briefly."),
    Message("user", "Hello! Can you help me with my order?"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppServer]:
    with llamacpp_server(bundled_model_path(), n_ctx=1024) as running:
        yield running


def settings_for(base_url: str) -> LLMBackendSettings:
    return LLMBackendSettings(backend="openai", base_url=base_url, model="bundled", timeout_s=60, connect_timeout_s=5)


@pytest.fixture
async def llm(server: LlamaCppServer) -> AsyncIterator[OpenAICompatibleLLM]:
    backend = OpenAICompatibleLLM.from_settings(settings_for(server.base_url))
    yield backend
    await backend.aclose()


async def test_check_reports_the_server_up(llm: OpenAICompatibleLLM, server: LlamaCppServer) -> None:
    status = await llm.check()

    assert status.startswith(f"{server.base_url}: up")
    assert "qwen2.5-coder-1.5b" in status


async def test_complete_returns_text_and_usage(llm: OpenAICompatibleLLM) -> None:
    completion = await llm.complete(GREETING, SHORT)

    assert completion.text.strip()
    assert completion.usage.prompt_tokens > 10
    assert 0 < completion.usage.completion_tokens <= 24
    assert completion.finish_reason in {"stop", "length"}


async def test_stream_deltas_add_up_to_the_final_text(llm: OpenAICompatibleLLM) -> None:
    deltas: list[str] = []
    finals: list[Completion] = []
    async for event in llm.stream(GREETING, SHORT):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            assert isinstance(event, StreamDone)
            finals.append(event.completion)

    (final,) = finals
    assert len(deltas) >= 3
    assert "".join(deltas) == final.text
    assert final.usage.prompt_tokens > 10
    assert final.usage.completion_tokens > 0
    assert final.finish_reason in {"stop", "length"}


async def test_server_killed_mid_stream_raises_an_llm_error() -> None:
    # Its own server: killing the shared one would break every test after this one.
    with llamacpp_server(bundled_model_path(), n_ctx=512) as doomed:
        backend = OpenAICompatibleLLM.from_settings(
            settings_for(doomed.base_url), retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01)
        )
        story = [Message("user", "Write a long story about a cat who works in a warehouse.")]
        received: list[str] = []
        try:
            async with asyncio.timeout(60):
                with pytest.raises(LLMError) as info:
                    async for event in backend.stream(story, GenerationOptions(max_tokens=64, temperature=0.0)):
                        assert isinstance(event, TextDelta), "the stream finished before the server was killed"
                        received.append(event.text)
                        if len(received) == 1:
                            doomed.kill()
                assert received
                assert "mid-stream" in str(info.value)
                assert doomed.base_url in str(info.value)

                with pytest.raises(LLMUnavailableError, match="cannot connect"):
                    await backend.complete(GREETING, SHORT)
        finally:
            await backend.aclose()
