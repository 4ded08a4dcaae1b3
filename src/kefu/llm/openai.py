"""The `openai` backend: any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, Ollama, DashScope)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from kefu.config import LLMBackendSettings
from kefu.errors import (
    ConfigError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from kefu.http_client import USER_AGENT, aiohttp_transport, json_body, send, what_failed
from kefu.llm.resilience import (
    CircuitBreaker,
    RetryPolicy,
    Sleep,
    call_with_retries,
    parse_retry_after,
    stream_with_retries,
)
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
from kefu.observability.logging import with_request_id

_SNIPPET_CHARS = 200
ErrorFactory = Callable[[str], LLMResponseError]


class OpenAICompatibleLLM:
    """Talks to one OpenAI-compatible `/chat/completions` endpoint through an injected httpx client.

    Every call passes a circuit breaker, and retryable failures are retried with backoff (a stream
    only until its first delta). Only `kefu.errors.LLMError` subclasses leave this class.
    """

    def __init__(
        self,
        settings: LLMBackendSettings,
        transport: httpx.AsyncBaseTransport,
        *,
        retry_policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Sleep = asyncio.sleep,
        owns_transport: bool = False,
    ) -> None:
        if not settings.base_url:
            raise ConfigError(
                "the openai LLM backend needs base_url: set KEFU_LLM__BASE_URL (e.g. http://127.0.0.1:8080/v1)"
            )
        self._settings = settings
        # Requests go straight to the transport (`kefu.http_client` says why).
        self._transport = transport
        self._owns_transport = owns_transport
        self._base_url = settings.base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}
        url = httpx.URL(self._base_url)
        # Operators need to see which endpoint failed; userinfo and query may hold secrets, so they are left out.
        self.endpoint = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None
        self._headers = {"User-Agent": USER_AGENT, **_auth_headers(settings)}
        self._extensions = {"timeout": _timeout(settings).as_dict()}
        self._retry = retry_policy or RetryPolicy(max_retries=settings.max_retries)
        self._breaker = breaker or CircuitBreaker(
            self.name,
            failure_threshold=settings.circuit_failure_threshold,
            reset_s=settings.circuit_reset_s,
        )
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: LLMBackendSettings, **kwargs: Any) -> OpenAICompatibleLLM:
        """Build the backend with its own connection pool (closed by `aclose()`); the app calls this once."""
        return cls(settings, aiohttp_transport(settings.base_url or ""), owns_transport=True, **kwargs)

    @property
    def name(self) -> str:
        return f"openai:{self._settings.model}"

    @property
    def model(self) -> str:
        return self._settings.model

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def complete(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        body = self._request_body(messages, options, stream=False)
        with self._breaker.guard():
            data = await call_with_retries(
                lambda: self._post_json("chat/completions", body), self._retry, sleep=self._sleep
            )
            return self._parse_completion(data)

    async def stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[StreamEvent]:
        body = self._request_body(messages, options, stream=True)
        done: StreamDone | None = None
        with self._breaker.guard():
            events = stream_with_retries(lambda: self._stream_once(body), self._retry, sleep=self._sleep)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, StreamDone):
                        done = event
                    else:
                        yield event
        # Yielded after the breaker has recorded success, so a caller that stops at StreamDone still counts.
        if done is None:
            raise self._endpoint_error("ended the stream without a result")
        yield done

    async def check(self) -> str:
        started = time.perf_counter()
        try:
            response = await self._send("GET", "models", None, self._headers)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code in (404, 405):
            body = self._request_body([Message("user", "ping")], GenerationOptions(max_tokens=1), stream=False)
            self._parse_completion(await self._post_json("chat/completions", body))
            elapsed_ms = (time.perf_counter() - started) * 1000
            return f"{self.endpoint}: up (no /models; a 1-token completion took {elapsed_ms:.0f} ms)"
        data = self._json_or_raise(response)
        elapsed_ms = (time.perf_counter() - started) * 1000
        entries = data.get("data") if isinstance(data, dict) else None
        ids = [str(m["id"]) for m in entries or () if isinstance(m, dict) and "id" in m]
        listed = "listed" if self._settings.model in ids else "not listed"
        served = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        return (
            f"{self.endpoint}: up in {elapsed_ms:.0f} ms, serves {served or 'no listed models'}; "
            f"model {self._settings.model!r} {listed}"
        )

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    def _url(self, path: str) -> httpx.URL:
        """The endpoint's URL for `path`, parsed once (parsing it costs a tenth of a millisecond per request)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(f"{self._base_url}/{path}")
        return url

    def _request_body(self, messages: Sequence[Message], options: GenerationOptions, *, stream: bool) -> dict[str, Any]:
        settings = self._settings
        body: dict[str, Any] = {
            "model": settings.model,
            "messages": [_message_to_openai(m) for m in messages],
            "max_tokens": options.max_tokens if options.max_tokens is not None else settings.max_tokens,
            "temperature": options.temperature if options.temperature is not None else settings.temperature,
        }
        if settings.cache_prompt:
            body["cache_prompt"] = True
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        if options.tools:
            body["tools"] = [_tool_to_openai(t) for t in options.tools]
        if options.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": dict(options.json_schema), "strict": True},
            }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None, headers: dict[str, str], *, stream: bool = False
    ) -> httpx.Response:
        """One request; the response is read and closed unless `stream` (then the caller closes it)."""
        content = None
        if body is not None:
            content = json_body(body)
            headers = {**headers, "Content-Type": "application/json"}
        request = httpx.Request(method, self._url(path), headers=headers, content=content, extensions=self._extensions)
        if stream:
            return await self._transport.handle_async_request(request)
        return await send(self._transport, request)

    async def _post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        try:
            response = await self._send("POST", path, body, with_request_id(self._headers))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        return self._json_or_raise(response)

    def _json_or_raise(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise self._status_error(response)
        try:
            return response.json()
        except ValueError as exc:
            raise self._endpoint_error(f"answered with invalid JSON: {self._snippet(response.text)}") from exc

    async def _stream_once(self, body: Mapping[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        acc = _StreamAccumulator(model=self._settings.model)
        headers = {**with_request_id(self._headers), "Accept": "text/event-stream"}
        try:
            response = await self._send("POST", "chat/completions", body, headers, stream=True)
            try:
                if response.is_error:
                    await response.aread()
                    raise self._status_error(response)
                async for sse in EventSource(response).aiter_sse():
                    if sse.data == "[DONE]":
                        acc.saw_done = True
                        break
                    if not sse.data:
                        continue
                    text = acc.feed(self._decode_chunk(sse.data))
                    if text:
                        yield TextDelta(text)
            finally:
                await response.aclose()
        except SSEError as exc:
            raise self._endpoint_error(f"did not answer with an event stream: {exc}") from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, mid_stream=acc.started) from exc
        if not (acc.saw_done or acc.finish_reason):
            raise self._endpoint_error("closed the stream before the model finished")
        yield StreamDone(acc.completion(self._endpoint_error))

    def _decode_chunk(self, data: str) -> Mapping[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise self._endpoint_error(f"sent a stream event that is not JSON: {self._snippet(data)}") from exc
        if not isinstance(chunk, dict):
            raise self._endpoint_error(f"sent a stream event that is not an object: {self._snippet(data)}")
        if chunk.get("error"):
            raise self._endpoint_error(f"reported an error mid-stream: {self._snippet(json.dumps(chunk['error']))}")
        return chunk

    def _parse_completion(self, data: Any) -> Completion:
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise self._endpoint_error(
                f"answered without choices[0].message: {self._snippet(json.dumps(data))}"
            ) from None
        if not isinstance(message, dict):
            raise self._endpoint_error(f"answered with a malformed message: {self._snippet(json.dumps(data))}")
        partials = []
        for raw in message.get("tool_calls") or ():
            partial = _ToolCallPartial()
            partial.add(raw)
            partials.append(partial)
        return Completion(
            text=message.get("content") or "",
            model=str(data.get("model") or self._settings.model),
            usage=_usage(data.get("usage")),
            tool_calls=tuple(p.finish(i, self._endpoint_error) for i, p in enumerate(partials)),
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    def _endpoint_error(self, what: str) -> LLMResponseError:
        return LLMResponseError(f"LLM endpoint {self.endpoint} {what}")

    def _status_error(self, response: httpx.Response) -> LLMHTTPError:
        return LLMHTTPError(
            response.status_code,
            self._redact(response.text),
            endpoint=self.endpoint,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )

    def _transport_error(self, exc: httpx.HTTPError, *, mid_stream: bool = False) -> LLMError:
        detail = self._redact(str(exc) or type(exc).__name__)
        exc = what_failed(exc)
        if isinstance(exc, httpx.ConnectTimeout):
            return LLMTimeoutError(
                f"LLM endpoint {self.endpoint} did not accept a connection within "
                f"{self._settings.connect_timeout_s:g}s ({detail})"
            )
        if isinstance(exc, httpx.TimeoutException):
            return LLMTimeoutError(
                f"LLM endpoint {self.endpoint} sent nothing for {self._settings.timeout_s:g}s ({detail})"
            )
        if isinstance(exc, httpx.ConnectError):
            return LLMUnavailableError(f"cannot connect to LLM endpoint {self.endpoint}: {detail}")
        if isinstance(exc, httpx.DecodingError):
            return self._endpoint_error(f"sent an undecodable body: {detail}")
        when = "mid-stream" if mid_stream else "before answering"
        return LLMUnavailableError(f"lost the connection to LLM endpoint {self.endpoint} {when}: {detail}")

    def _redact(self, text: str) -> str:
        # Some proxies echo request headers back in error bodies; the key must not reach logs or users.
        return text.replace(self._secret, "***") if self._secret else text

    def _snippet(self, text: str) -> str:
        text = self._redact(text)
        return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "…"


def _auth_headers(settings: LLMBackendSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}


def _timeout(settings: LLMBackendSettings) -> httpx.Timeout:
    return httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)


def _message_to_openai(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        # OpenAI's schema wants null, not "", for an assistant turn that only calls tools.
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(dict(call.arguments), ensure_ascii=False)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tool_to_openai(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
    }


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )


def _arguments_text(raw: Any) -> str:
    # The spec says a JSON string, but some servers (Ollama, older vLLM) send the object itself.
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)


@dataclass(slots=True)
class _ToolCallPartial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def add(self, fragment: Any) -> None:
        """Merge one OpenAI tool-call object, or one streamed fragment of it."""
        if not isinstance(fragment, dict):
            return
        function = fragment.get("function") or {}
        # id and name arrive once, in the first fragment; arguments may arrive in pieces.
        self.id = self.id or str(fragment.get("id") or "")
        self.name = self.name or str(function.get("name") or "")
        self.arguments.append(_arguments_text(function.get("arguments")))

    def finish(self, index: int, error: ErrorFactory) -> ToolCall:
        text = "".join(self.arguments).strip()
        try:
            arguments = json.loads(text) if text else {}
        except ValueError:
            raise error(
                f"called tool {self.name!r} with arguments that are not JSON: {text[:_SNIPPET_CHARS]}"
            ) from None
        if not isinstance(arguments, dict):
            raise error(f"called tool {self.name!r} with arguments that are not a JSON object: {text[:_SNIPPET_CHARS]}")
        return ToolCall(id=self.id or f"call_{index}", name=self.name, arguments=arguments)


@dataclass(slots=True)
class _StreamAccumulator:
    """Builds the final completion from streamed chunks: text, tool-call fragments, usage."""

    model: str
    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCallPartial] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    saw_done: bool = False
    started: bool = False

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one chunk; return its new text (possibly empty)."""
        self.started = True
        if chunk.get("model"):
            self.model = str(chunk["model"])
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        choices = chunk.get("choices") or ()
        if not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta") or {}
        for position, fragment in enumerate(delta.get("tool_calls") or ()):
            index = fragment.get("index", position) if isinstance(fragment, dict) else position
            self.tool_calls.setdefault(index, _ToolCallPartial()).add(fragment)
        text = str(delta.get("content") or "")
        if text:
            self.text.append(text)
        return text

    def completion(self, error: ErrorFactory) -> Completion:
        ordered = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return Completion(
            text="".join(self.text),
            model=self.model,
            usage=self.usage,
            tool_calls=tuple(p.finish(i, error) for i, p in enumerate(ordered)),
            finish_reason=self.finish_reason or "stop",
        )
