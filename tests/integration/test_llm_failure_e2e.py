"""The LLM endpoint dead, or killed mid-turn: the customer still gets a bilingual reply and nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from kefu.api.app import create_app
from kefu.services import Services
from tests.conftest import make_settings
from tests.support.live_server import free_port, live_server
from tests.support.llamacpp_server import bundled_model_path, llamacpp_server


async def test_dead_llm_endpoint_gives_fallback_and_stores_the_turn(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = make_settings(tmp_path, llm={"backend": "openai", "base_url": dead, "max_retries": 1})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            resp = await client.post("/v1/chat", json={"user_id": "d1", "text": "运费怎么算？"})
        assert resp.status_code == 200
        body = resp.json()
        assert body["error"] == "llm_unavailable" and "抱歉" in body["reply"] and "Sorry" not in body["reply"]
        services: Services = app.state.services
        stored = await services.store.list_messages(body["session_id"])
        assert next((m.role, m.text) for m in stored) == ("user", "运费怎么算？")
        assert stored[1].error_code == "llm_unavailable" and stored[1].text == body["reply"]


@pytest.mark.llm
async def test_llm_server_killed_mid_stream(tmp_path: Path) -> None:
    with llamacpp_server(bundled_model_path(), n_ctx=1024) as llm_server:
        settings = make_settings(
            tmp_path,
            llm={
                "backend": "openai",
                "base_url": llm_server.base_url,
                "max_retries": 0,
                "max_tokens": 200,
                "model": "qwen",
            },
        )
        with live_server(create_app(settings)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                body = {"user_id": "k1", "text": "Please write a long story about how shipping works."}
                events: list[tuple[str, dict[str, object]]] = []
                async with client.stream("POST", "/v1/chat/stream", json=body) as resp:
                    name = ""
                    async for line in resp.aiter_lines():
                        if line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            events.append((name, json.loads(line[5:])))
                            if name == "delta" and sum(n == "delta" for n, _ in events) == 2:
                                llm_server.kill()
                done = events[-1]
                assert done[0] == "done", events[-3:]
                assert done[1]["error"] in {"llm_unavailable", "llm_error", "llm_bad_response", "llm_timeout"}
                assert "Sorry" in str(done[1]["reply"])
                history = (await client.get(f"/v1/sessions/{done[1]['session_id']}/messages")).json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[0]["text"] == body["text"] and history[1]["error"] == done[1]["error"]
