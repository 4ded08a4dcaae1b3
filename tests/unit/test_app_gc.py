"""Start-up objects stay out of the garbage collector's full passes while the app serves, and are freed after; the
collector runs less often while it serves, and as before afterwards."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx

from kefu.api.app import GC_THRESHOLDS, create_app
from kefu.llm.testing import ScriptedLLM
from tests.conftest import make_settings


async def test_start_up_objects_are_frozen_while_serving_and_released_at_shutdown(tmp_path: Path) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    app = create_app(make_settings(tmp_path), llm=ScriptedLLM(default_reply="您好 Hello"))
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the services, their models and indexes
        assert gc.get_threshold() == GC_THRESHOLDS
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client:
            reply = await client.post("/v1/chat", json={"user_id": "u1", "text": "你好"})
        assert reply.status_code == 200 and reply.json()["reply"]
        assert 0 < gc.get_freeze_count() <= frozen  # still frozen; a turn adds nothing to the frozen set
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
