"""Latency and throughput of one streamed answer, measured from the caller's side of any LLM backend."""

from __future__ import annotations

import time

from kefu.errors import LLMResponseError
from kefu.llm.base import LLMBackend
from kefu.llm.types import GenerationOptions, Message, StreamDone, TextDelta


async def measure(
    backend: LLMBackend,
    question: str,
    *,
    system: str | None = None,
    max_tokens: int = 32,
) -> dict[str, float]:
    """Stream one answer to `question`; return time to first token and prompt / generation speed.

    Prompt speed is prompt tokens over time to first token, so it includes the first decode
    step and is only meaningful for a prompt the backend has not cached: ask a question not
    asked before to measure it cold, or repeat the system prompt to measure prefix reuse.
    """
    messages = [Message("user", question)]
    if system is not None:
        messages.insert(0, Message("system", system))
    options = GenerationOptions(max_tokens=max_tokens, temperature=0)
    started = time.perf_counter()
    first: float | None = None
    done: StreamDone | None = None
    events = backend.stream(messages, options)
    try:
        async for event in events:
            if isinstance(event, TextDelta) and first is None:
                first = time.perf_counter()
            elif isinstance(event, StreamDone):
                done = event
    finally:
        # The protocol promises only an AsyncIterator; generators also need closing.
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    ended = time.perf_counter()
    if done is None:
        raise LLMResponseError(f"{backend.name} ended its stream without a StreamDone event")
    usage = done.completion.usage
    ttft = (first or ended) - started
    generating = ended - (first or ended)
    return {
        "ttft_s": ttft,
        "total_s": ended - started,
        "prompt_tokens": float(usage.prompt_tokens),
        "completion_tokens": float(usage.completion_tokens),
        "prompt_tok_per_s": usage.prompt_tokens / ttft if ttft > 0 else 0.0,
        # The first token is counted in the time to first token, not here.
        "gen_tok_per_s": (usage.completion_tokens - 1) / generating if generating > 0 else 0.0,
    }
