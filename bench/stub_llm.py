"""A fixed-latency OpenAI-compatible endpoint, so a benchmark measures kefu and not a model.

`python -m bench.stub_llm --port 8181 --latency-ms 20` serves, on 127.0.0.1 only:
- `GET /v1/models`
- `POST /v1/chat/completions`, plain or streamed (`"stream": true`, SSE chunks then `[DONE]`): it waits
  the fixed latency, then answers a fixed short reply with token usage;
- `GET /bench/calls`: how many completions it served per `X-Request-ID` (kefu forwards the id of the chat
  request a call serves), so a benchmark knows how many model calls each of kefu's turns made.
It is a bare ASGI app (no framework) under uvicorn with uvloop and httptools, so that the baseline it
gives costs as little CPU as a Python server can.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

REPLY = "您好！这是基准测试的固定回复。Hello! This is the fixed benchmark reply."
REPLY_CHUNKS = ("您好！", "这是基准测试的固定回复。", "Hello! ", "This is the fixed benchmark reply.")
COMPLETION_TOKENS = 24

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _prompt_tokens(body: dict[str, Any]) -> int:
    chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", ()) if isinstance(m, dict))
    return max(1, chars // 2)


class StubLLM:
    """The ASGI app; `latency_s` is added before the (first chunk of the) reply."""

    def __init__(self, latency_s: float, model: str = "stub") -> None:
        self.latency_s = latency_s
        self.model = model
        self.requests = 0
        self.calls: Counter[str] = Counter()
        """Completions served per X-Request-ID."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in ("/v1/models", "/healthz"):
            models = {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "bench"}]}
            await self._json(send, 200, models)
        elif method == "GET" and path == "/bench/calls":
            await self._json(send, 200, {"calls": dict(self.calls)})
        elif method == "POST" and path == "/v1/chat/completions":
            await self._chat(scope, receive, send)
        else:
            await self._json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = bytearray()
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = json.loads(raw)
        except ValueError:
            await self._json(send, 400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        self.requests += 1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                self.calls[value.decode("latin-1")] += 1
        created = int(time.time())
        ident = f"chatcmpl-stub-{self.requests}"
        model = str(body.get("model") or self.model)
        usage = {
            "prompt_tokens": _prompt_tokens(body),
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": _prompt_tokens(body) + COMPLETION_TOKENS,
        }
        await asyncio.sleep(self.latency_s)
        if not body.get("stream"):
            await self._json(
                send,
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                },
            )
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
        chunks: list[dict[str, Any]] = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        ]
        chunks += [
            {**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            for text in REPLY_CHUNKS
        ]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        for chunk in chunks:
            data = json.dumps(chunk, ensure_ascii=False)
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    @staticmethod
    async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        headers = [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added before each reply (default 20)")
    parser.add_argument("--model", default="stub")
    args = parser.parse_args(argv)
    uvicorn.run(
        StubLLM(args.latency_ms / 1000, args.model),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=2048,
    )


if __name__ == "__main__":
    main()
