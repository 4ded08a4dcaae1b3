"""The embedded LLM backend: llama.cpp in process, through xllamacpp's native server engine.

xllamacpp runs llama.cpp's server internals (parallel slots, continuous batching, prompt cache)
on its own thread; each request is a blocking call that we run on a worker thread, with a
per-chunk callback that feeds the event loop. Returning True from that callback is how a
request is cancelled.

Tool calls: the 1.5B model does not emit the `<tool_call>` tags llama.cpp's Qwen parser looks for
(it answers with a fenced JSON block instead), so tools are done here: the tool list goes into the
system prompt and the reply is grammar-constrained to `{"tool": name, "arguments": {...}}` or
`{"answer": "..."}`, then mapped to `Completion.tool_calls` / `Completion.text`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kefu.config import LLMBackendSettings
from kefu.errors import ConfigError, LLMError, LLMHTTPError, LLMResponseError, LLMUnavailableError
from kefu.llm.model_assets import ensure_bundled_model
from kefu.llm.types import (
    Completion,
    GenerationOptions,
    Message,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

# llama.cpp decodes a prompt in steps of n_batch tokens and only looks at cancellations, and at the
# other slots' generation, between steps. On CPU 256 tokens per step is as fast as 2048 (62 tok/s
# both, measured), and bounds a cancel or another customer's stall to ~4 s instead of ~30 s.
_PROMPT_BATCH_TOKENS = 256
# Slot states evicted to RAM so that a conversation returning after others used its slot still
# reuses its KV prefix; KV is ~28 KB/token for this model, so this holds ~18k tokens.
_PROMPT_CACHE_RAM_MIB = 512

_TOOLS_INSTRUCTIONS = """

You can call these tools (JSON schema of each tool's arguments):
{tools}
Reply with exactly one JSON object: {{"tool": "<tool name>", "arguments": {{...}}}} to call a tool, \
or {{"answer": "<your reply>"}} to reply directly."""

ChunkSink = Callable[[str], bool]
"""Receives streamed text on the worker thread; returns False when nobody listens any more."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """One request translated to llama.cpp's wire format, and how to read its reply."""

    body: dict[str, Any]
    tools: tuple[ToolSpec, ...]
    answer_schema: Mapping[str, Any] | None


@dataclass(slots=True)
class _Outcome:
    """What one llama.cpp request produced, gathered on the worker thread."""

    parts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: LLMError | None = None


class EmbeddedLLM:
    """Serves chat completions from a GGUF model loaded in this process (llama.cpp via xllamacpp)."""

    def __init__(self, settings: LLMBackendSettings, model_path: Path) -> None:
        if not model_path.is_file():
            raise ConfigError(
                f"KEFU_LLM__MODEL_PATH: no GGUF file at {model_path}; "
                "point it at a .gguf file or unset it to use the bundled model"
            )
        self._settings = settings
        self._model_path = model_path
        self._model = model_path.stem
        self._closing = threading.Event()
        self._active_lock = threading.Lock()
        self._active = 0
        started = time.perf_counter()
        self._server: Any = _load_server(settings, model_path)
        self.load_seconds = time.perf_counter() - started
        """Wall time it took to load the model, for `kefu doctor` and the benchmark."""
        # One thread per slot, plus room for requests whose cancel is still in flight; requests
        # beyond that wait in the executor queue, where a cancel drops them without running.
        self._executor = ThreadPoolExecutor(max_workers=settings.n_parallel + 2, thread_name_prefix="kefu-llama")

    @classmethod
    def from_settings(cls, settings: LLMBackendSettings, data_dir: Path) -> EmbeddedLLM:
        """Load `settings.model_path`, or the bundled model (joined into `data_dir/models` on first use).

        Blocks for seconds (about a minute when the bundled model is first joined): call it at start-up,
        or through `open()` from async code.
        """
        model_path = settings.model_path or ensure_bundled_model(data_dir / "models")
        return cls(settings, model_path)

    @classmethod
    async def open(cls, settings: LLMBackendSettings, data_dir: Path) -> EmbeddedLLM:
        """`from_settings` on a worker thread, so the event loop keeps serving while the model loads."""
        return await asyncio.to_thread(cls.from_settings, settings, data_dir)

    @property
    def name(self) -> str:
        return f"embedded:{self._model}"

    @property
    def model(self) -> str:
        return self._model

    @property
    def active_requests(self) -> int:
        """Requests llama.cpp is working on now (a cancelled one counts until llama.cpp lets go of it)."""
        return self._active

    async def complete(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        plan = self._plan(messages, options)
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        try:
            outcome = await loop.run_in_executor(self._executor, self._generate, plan.body, None, cancel)
        finally:
            cancel.set()
        return self._finish(plan, outcome)

    async def stream(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> AsyncGenerator[StreamEvent, None]:
        plan = self._plan(messages, options)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def sink(text: str) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, text)
            except RuntimeError:  # the loop is closed: the consumer is gone
                return False
            return True

        # A tool-call reply is JSON that only makes sense once complete, so it is not streamed.
        streams_text = not plan.tools
        worker = loop.run_in_executor(self._executor, self._generate, plan.body, sink if streams_text else None, cancel)
        # Deltas were scheduled on the loop before the worker's result, so the sentinel comes last.
        worker.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (text := await queue.get()) is not None:
                yield TextDelta(text)
            outcome = await worker
        finally:
            cancel.set()
            # Cancelling the asyncio side only detaches it; the worker thread stops at its next
            # chunk, and its late result or error is dropped instead of logged as unretrieved.
            worker.cancel()
        completion = self._finish(plan, outcome)
        if not streams_text and completion.text:
            yield TextDelta(completion.text)
        yield StreamDone(completion)

    async def check(self) -> str:
        started = time.perf_counter()
        await self.complete([Message("user", "ping")], GenerationOptions(max_tokens=1, temperature=0))
        elapsed_ms = (time.perf_counter() - started) * 1000
        return (
            f"embedded llama.cpp (xllamacpp {_xllamacpp_version()}): {self._model} from {self._model_path}, "
            f"{self._settings.n_parallel} slots, n_ctx {self._settings.n_ctx}, "
            f"loaded in {self.load_seconds:.1f}s, 1-token reply in {elapsed_ms:.0f} ms"
        )

    async def aclose(self) -> None:
        """Stop running requests and free the model; later calls raise `LLMUnavailableError`."""
        if self._server is None:
            return
        self._closing.set()
        holder = [self._server]
        self._server = None
        # Dropping the last reference joins llama.cpp's loop thread, which can take a moment;
        # a request still running holds its own reference and frees the server when it returns.
        await asyncio.to_thread(holder.clear)
        # Queued requests still run, find the backend closed and raise LLMUnavailableError;
        # cancelling them would surface as a CancelledError in tasks nobody cancelled.
        self._executor.shutdown(wait=False)

    def _plan(self, messages: Sequence[Message], options: GenerationOptions) -> _Plan:
        if self._server is None:
            raise LLMUnavailableError(f"{self.name}: the backend is closed")
        tools = tuple(options.tools)
        wire = [_wire_message(m) for m in messages]
        body: dict[str, Any] = {
            "messages": wire,
            "stream": True,
            "stream_options": {"include_usage": True},
            # Progress chunks arrive after each prompt step: they give the callback, and so a
            # cancel, a chance to act before the first token of a long prompt.
            "return_progress": True,
            "cache_prompt": True,
            "max_tokens": options.max_tokens or self._settings.max_tokens,
            "temperature": (self._settings.temperature if options.temperature is None else options.temperature),
        }
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        schema: Mapping[str, Any] | None = options.json_schema
        if tools:
            _add_tool_instructions(wire, tools)
            schema = _tool_reply_schema(tools, options.json_schema)
        if schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
        return _Plan(body=body, tools=tools, answer_schema=options.json_schema)

    def _generate(self, body: dict[str, Any], sink: ChunkSink | None, cancel: threading.Event) -> _Outcome:
        """Run one request on this worker thread; raises only `LLMError`s."""
        server = self._server
        if server is None or self._closing.is_set():
            raise LLMUnavailableError(f"{self.name}: the backend is closed")
        outcome = _Outcome()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            # Exceptions raised here are swallowed by xllamacpp (it just stops), so none may escape.
            try:
                if cancel.is_set() or self._closing.is_set():
                    return True
                return _read_chunk(chunk, outcome, sink, self.name)
            except Exception as exc:
                outcome.error = LLMError(f"{self.name}: could not read a reply chunk: {exc!r}")
                return True

        with self._active_lock:
            self._active += 1
        try:
            server.handle_chat_completions(body, on_chunk)
        except ValueError as exc:
            # llama.cpp rejects a request it cannot serve (e.g. an invalid JSON schema) with a
            # ValueError here; its HTTP server would answer 400, so callers see the same either way.
            raise LLMHTTPError(400, str(exc), endpoint=self.name) from None
        except Exception as exc:
            raise LLMError(f"{self.name}: llama.cpp failed: {exc!r}") from None
        finally:
            del server
            with self._active_lock:
                self._active -= 1
        if outcome.error is not None:
            raise outcome.error
        if self._closing.is_set():
            raise LLMUnavailableError(f"{self.name}: the backend was closed during the request")
        return outcome

    def _finish(self, plan: _Plan, outcome: _Outcome) -> Completion:
        text = "".join(outcome.parts)
        usage = Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens)
        finish_reason = outcome.finish_reason or "stop"
        if plan.tools:
            return self._tool_completion(plan, text, usage, finish_reason)
        if plan.answer_schema is not None:
            _parse_json(text, finish_reason, what="JSON reply")
        return Completion(text=text, model=self._model, usage=usage, finish_reason=finish_reason)

    def _tool_completion(self, plan: _Plan, text: str, usage: Usage, finish_reason: str) -> Completion:
        reply = _parse_json(text, finish_reason, what="tool-or-answer reply")
        if not isinstance(reply, dict):
            raise LLMResponseError(f"the model's tool-or-answer reply is not an object: {text[:200]!r}")
        if "tool" in reply:
            name = reply["tool"]
            arguments = reply.get("arguments", {})
            if name not in {t.name for t in plan.tools} or not isinstance(arguments, dict):
                raise LLMResponseError(f"the model called an unknown tool or gave bad arguments: {text[:200]!r}")
            call = ToolCall(id=f"call_{uuid.uuid4().hex[:16]}", name=name, arguments=arguments)
            return Completion(text="", model=self._model, usage=usage, tool_calls=(call,), finish_reason="tool_calls")
        answer = reply.get("answer", "")
        if not isinstance(answer, str):
            answer = json.dumps(answer, ensure_ascii=False)
        return Completion(text=answer, model=self._model, usage=usage, finish_reason=finish_reason)


def _load_server(settings: LLMBackendSettings, model_path: Path) -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise ConfigError(
            f"the embedded backend needs xllamacpp (pip install 'kefu[embedded]'), "
            f"or set KEFU_LLM__BACKEND=openai: {exc}"
        ) from None
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_ctx = settings.n_ctx
    params.n_parallel = settings.n_parallel
    params.n_batch = _PROMPT_BATCH_TOKENS
    params.n_ubatch = _PROMPT_BATCH_TOKENS
    params.cache_ram_mib = _PROMPT_CACHE_RAM_MIB
    # Each request asks for it too; set here so no xllamacpp default can turn prefix reuse off for the server.
    params.cache_prompt = True
    if settings.n_threads is not None:
        params.cpuparams.n_threads = settings.n_threads
        params.cpuparams_batch.n_threads = settings.n_threads
    # xllamacpp always starts llama.cpp's HTTP listener too (loopback, random port). Nothing in
    # kefu uses it; a random API key keeps other local users from using the model or reading
    # prompts (customer text) through it.
    params.api_keys = [secrets.token_urlsafe(32)]
    params.ui = False
    params.endpoint_slots = False
    # llama.cpp's logs can contain prompts, i.e. customer text.
    params.verbosity = 0
    try:
        return xllamacpp.Server(params)
    except Exception as exc:
        raise LLMUnavailableError(f"llama.cpp could not load the model {model_path}: {exc}") from None


def _xllamacpp_version() -> str:
    import xllamacpp

    return str(xllamacpp.__version__)


def _wire_message(message: Message) -> dict[str, Any]:
    content = message.content
    if message.tool_calls:
        # Earlier tool calls are shown to the model in the same shape it is constrained to emit.
        calls = [
            json.dumps({"tool": c.name, "arguments": dict(c.arguments)}, ensure_ascii=False) for c in message.tool_calls
        ]
        content = "\n".join([content, *calls]) if content else "\n".join(calls)
    wire: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _add_tool_instructions(wire: list[dict[str, Any]], tools: Sequence[ToolSpec]) -> None:
    listing = "\n".join(
        json.dumps(
            {"name": t.name, "description": t.description, "arguments": dict(t.parameters)},
            ensure_ascii=False,
        )
        for t in tools
    )
    instructions = _TOOLS_INSTRUCTIONS.format(tools=listing)
    # Appended to the first system message, so the prefix before it stays the cached one.
    if wire and wire[0]["role"] == "system":
        wire[0]["content"] += instructions
    else:
        wire.insert(0, {"role": "system", "content": instructions.lstrip()})


def _tool_reply_schema(tools: Sequence[ToolSpec], answer_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    branches: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "tool": {"const": t.name},
                "arguments": dict(t.parameters) or {"type": "object"},
            },
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    branches.append(
        {
            "type": "object",
            "properties": {"answer": dict(answer_schema) if answer_schema else {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    )
    return {"anyOf": branches}


def _read_chunk(chunk: dict[str, Any], outcome: _Outcome, sink: ChunkSink | None, backend: str) -> bool:
    """Fold one OpenAI-style chunk into `outcome`; True asks llama.cpp to stop."""
    error = chunk.get("error")
    if error is not None:
        outcome.error = _runtime_error(error, backend)
        return True
    usage = chunk.get("usage")
    if usage:
        outcome.prompt_tokens = int(usage.get("prompt_tokens", 0))
        outcome.completion_tokens = int(usage.get("completion_tokens", 0))
    for choice in chunk.get("choices", ()):
        text = (choice.get("delta") or {}).get("content")
        if text:
            outcome.parts.append(text)
            if sink is not None and not sink(text):
                return True
        if choice.get("finish_reason"):
            outcome.finish_reason = str(choice["finish_reason"])
    return False


def _runtime_error(error: Any, backend: str) -> LLMError:
    if not isinstance(error, dict):
        return LLMError(f"{backend}: llama.cpp failed: {error!r}")
    code = int(error.get("code", 500))
    body = json.dumps(error, ensure_ascii=False)
    if code == 503:
        return LLMUnavailableError(f"{backend}: llama.cpp is not ready: {error.get('message', body)}")
    return LLMHTTPError(code, body, endpoint=backend)


def _parse_json(text: str, finish_reason: str, *, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        hint = " (cut off by max_tokens: raise it)" if finish_reason == "length" else ""
        raise LLMResponseError(f"the model's {what} is not valid JSON{hint}: {text[:200]!r}") from None
