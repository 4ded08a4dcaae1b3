"""Two kefu instances on one PostgreSQL: the canary's turns count wherever they ran, one instance's rollback (or an
operator's switch on either) is followed by the other within seconds, and a rollback is made and audited once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from tests.conftest import make_settings
from tests.integration.test_release_rollback import CONTROL_REPLY, QUESTION, canary_sessions, write_release
from tests.support.failing_server import failing_server

pytestmark = pytest.mark.postgres
EXPERIMENT = "qwen3-canary"
MIN_TURNS = 8
FOLLOW_WITHIN_S = 10.0
"""Generous for a shared test machine; each instance re-reads the state every 0.2 s here."""


@asynccontextmanager
async def _instance(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
            yield client


async def _turn(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/chat", json={"user_id": f"u-{session_id}", "session_id": session_id, "text": QUESTION}
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["error"] is None and body["reply"] == CONTROL_REPLY
    return body


async def _until(condition: Any, what: str) -> float:
    """Wait until `condition()` holds; returns the seconds it took (reported, never asserted beyond the deadline)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await condition():
        assert loop.time() - start < FOLLOW_WITHIN_S, f"not within {FOLLOW_WITHIN_S} s: {what}"
        await asyncio.sleep(0.05)
    return loop.time() - start


async def test_two_instances_share_the_canary_counts_and_follow_each_others_switches(
    tmp_path: Path, postgres_url: str
) -> None:
    with failing_server(500) as broken:
        release_file = write_release(tmp_path / "release.yaml", broken.base_url, min_turns=MIN_TURNS)
        apps = []
        for name in ("a", "b"):
            settings = make_settings(
                tmp_path / name,
                database_url=postgres_url,
                release={"file": release_file, "sync_interval_s": 0.2, "check_interval_s": 0.5},
            )
            apps.append(create_app(settings, llm=ScriptedLLM(model="control-model", default_reply=CONTROL_REPLY)))
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(_instance(apps[0]))
            b = await stack.enter_async_context(_instance(apps[1]))
            services_a: Services = apps[0].state.services
            services_b: Services = apps[1].state.services
            assert services_a.release is not None and services_b.release is not None
            canary = canary_sessions(MIN_TURNS, EXPERIMENT)

            # B serves fewer failing canary turns than the rule needs; A serves the rest. Neither alone has
            # MIN_TURNS, so a rollback proves the rule counted both instances' turns from the shared store.
            for sid in canary[:5]:
                await _turn(b, sid)
            await asyncio.sleep(1.0)  # both instances have evaluated the rule at least once meanwhile
            assert (await services_a.release.states.get(EXPERIMENT)).state == "running"
            for sid in canary[5:MIN_TURNS]:
                await _turn(a, sid)

            async def rolled_back_everywhere() -> bool:
                states = [s.release.state(EXPERIMENT) for s in (services_a, services_b) if s.release is not None]
                return all(state is not None and state.state == "rolled_back" for state in states)

            followed_s = await _until(rolled_back_everywhere, "both instances follow the automatic rollback")
            print(f"both instances followed the rollback within {followed_s:.2f} s")

            audit = (await a.get("/v1/admin/audit", params={"action": "release.rollback"})).json()
            assert len(audit) == 1 and audit[0]["actor"] == "system:auto-rollback"
            assert audit[0]["data"]["evidence"]["canary"]["turns"] == MIN_TURNS
            assert broken.requests > 0

            # Each instance now answers the canary's sessions with the control arm.
            for client, sid in ((a, canary[0]), (b, canary[5])):
                await _turn(client, sid)
                latest = (await services_a.store.list_messages(sid))[-1]
                assert (latest.arm, latest.arm_error) == ("control", None)
            session = await services_b.store.get_session(canary[0])
            assert (session.experiment, session.arm) == (EXPERIMENT, "canary")  # its assignment is kept

            # An operator's switch on B is followed by A: resumed, canary sessions go back to the canary.
            resumed = await b.post(
                f"/v1/admin/release/experiments/{EXPERIMENT}/resume", json={"share": 50, "reason": "fixed"}
            )
            assert resumed.status_code == 200, resumed.text

            async def a_running() -> bool:
                state = services_a.release.state(EXPERIMENT) if services_a.release is not None else None
                return state is not None and state.state == "running"

            await _until(a_running, "instance A follows the operator's resume on B")
            await _turn(a, canary[1])
            latest = (await services_a.store.list_messages(canary[1]))[-1]
            assert latest.arm == "canary" and latest.arm_error in ("llm_http_error", "llm_circuit_open")
