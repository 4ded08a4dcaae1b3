"""`kefu serve --workers 2` on one machine, with neither Redis nor PostgreSQL (SQLite): what one worker worked out
serves the other through the tables they share in memory (`kefu.worker_memory`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import DEMO_SHOP
from tests.support.workers import Server, counters, fresh_connections, serve_workers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("worker-memory")
    settings = {
        "KEFU_DATA_DIR": str(root / "data"),
        "KEFU_CONFIG": str(root / "none.yaml"),
        "KEFU_SHOP__DIR": str(DEMO_SHOP),
        "KEFU_LLM__BACKEND": "testing",
        "KEFU_AUTH__MODE": "open",
        "KEFU_RATE_LIMIT__ENABLED": "false",
        "KEFU_KNOWLEDGE__SOURCE_DIR": str(DEMO_SHOP / "knowledge"),
        # The test embedders: the workers start in seconds (the bundled model's vectors are shared the same way).
        "KEFU_KNOWLEDGE__EMBEDDING__BACKEND": "hashing",
        "KEFU_UNDERSTANDING__EMBEDDER": "hashing",
        "KEFU_UNDERSTANDING__LLM_FALLBACK": "false",
        "KEFU_GUARDS__EMBEDDING_CLASSIFIER": "false",
    }
    with serve_workers(settings, root, tables={"vectors", "answers"}) as running:
        yield running


async def test_an_answer_one_worker_cached_is_served_from_the_cache_by_the_other(server: Server) -> None:
    """Without the shared table, each worker would answer the question once itself before serving it cached."""
    question = "收到的东西不想要了可以退吗？"  # a curated answer of the demo shop's FAQ
    replies: list[str] = []
    async with fresh_connections(server.url) as http:
        before = await counters(http, "kefu_turns", "route")
        seen = len(server.workers_serving("POST /v1/chat"))
        for attempt in range(30):  # until both workers have answered it
            resp = await http.post("/v1/chat", json={"user_id": f"asks-{attempt}", "text": question})
            assert resp.status_code == 200, resp.text
            replies.append(resp.json()["reply"])
            if len(set(server.workers_serving("POST /v1/chat")[seen:])) == 2:
                break
        else:
            pytest.fail("30 messages were all answered by one worker")
        after = await counters(http, "kefu_turns", "route")
    routes = {route: after[route] - before.get(route, 0) for route in after if after[route] > before.get(route, 0)}
    assert routes == {"faq": 1, "cache": len(replies) - 1}, routes
    assert len(set(replies)) == 1 and "7 天" in replies[0]
