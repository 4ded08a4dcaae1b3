"""A canary pointed at a broken LLM server is rolled back automatically, and customers never see its errors."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from kefu.release import bucket
from kefu.services import Services
from tests.conftest import make_settings
from tests.support.failing_server import failing_server

CONTROL_REPLY = "您好，我们的客服时间是每天 9:00-21:00。Our support hours are 9:00-21:00 every day."
QUESTION = "你们的客服几点上班？"
MAX_ERROR_RATE = 0.2
MIN_TURNS = 8


def write_release(path: Path, canary_url: str, *, share: float = 50, **rollback: Any) -> Path:
    rule = {"window_s": 600, "min_turns": MIN_TURNS, "max_error_rate": MAX_ERROR_RATE, **rollback}
    experiment = {
        "id": "qwen3-canary",
        "description": "a new model server, broken on purpose",
        "share": share,
        "canary": {
            "llm": {"backend": "openai", "base_url": canary_url, "model": "qwen3-8b", "max_retries": 0},
        },
        "rollback": rule,
    }
    path.write_text(yaml.safe_dump({"experiments": [experiment]}, allow_unicode=True), encoding="utf-8")
    return path


def canary_sessions(count: int, experiment: str = "qwen3-canary") -> list[str]:
    """Session ids a 50 % share assigns to the canary (the assignment is a hash of the ids)."""
    found: list[str] = []
    while len(found) < count:
        sid = uuid.uuid4().hex
        if bucket(experiment, sid) < 5000:
            found.append(sid)
    return found


async def streamed(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """The `done` event of a POST /v1/chat/stream."""
    name, done = "", None
    async with client.stream("POST", "/v1/chat/stream", json=body) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name == "done":
                done = json.loads(line[5:])
    assert done is not None, "the stream ended without a done event"
    return dict(done)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus exposition (0 when the series is absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(part.split("=", 1) for part in line[len(name) + 1 : line.index("}")].split(","))
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_failing_canary_is_rolled_back_and_customers_see_no_errors(tmp_path: Path) -> None:
    with failing_server(500) as broken:
        release_file = write_release(tmp_path / "release.yaml", broken.base_url)
        settings = make_settings(
            tmp_path, release={"file": release_file, "sync_interval_s": 0.2, "check_interval_s": 0.5}
        )
        control = ScriptedLLM(model="control-model", default_reply=CONTROL_REPLY)
        app = create_app(settings, llm=control)
        async with app.router.lifespan_context(app):
            services: Services = app.state.services
            assert services.release is not None
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
                # Streamed turns of canary sessions: the control's model takes over before the first token.
                streamed_sessions = canary_sessions(3)
                for sid in streamed_sessions:
                    done = await streamed(client, {"user_id": f"u-{sid}", "session_id": sid, "text": QUESTION})
                    assert (done["error"], done["reply"]) == (None, CONTROL_REPLY)
                    latest = (await services.store.list_messages(sid))[-1]
                    assert (latest.arm, latest.arm_error) == ("canary", "llm_http_error")
                bodies = []
                for n in range(60):
                    resp = await client.post("/v1/chat", json={"user_id": f"shopper-{n}", "text": QUESTION})
                    assert resp.status_code == 200, resp.text
                    bodies.append(resp.json())
                for _ in range(100):  # the rule runs in the background: give it a moment after the last turn
                    state = await services.release.states.get("qwen3-canary")
                    if state.state == "rolled_back":
                        break
                    await asyncio.sleep(0.1)
                metrics_text = (await client.get("/metrics")).text
                audit = (await client.get("/v1/admin/audit", params={"action": "release.rollback"})).json()
                experiments = (await client.get("/v1/admin/release/experiments")).json()

            # The canary really was asked, and failed: its server got requests and answered 500.
            assert broken.requests > 0

            # Rolled back automatically: the shared state, its audit record and the metric all say so.
            assert state.state == "rolled_back" and state.share == 0
            assert state.updated_by == "system:auto-rollback"
            assert [(e["actor"], e["target"]) for e in audit] == [("system:auto-rollback", "qwen3-canary")]
            record = audit[0]["data"]
            assert record["before"] == {"state": "running", "share": 50.0}
            assert record["after"] == {"state": "rolled_back", "share": 0.0}
            assert "error rate" in record["reason"] and f"> {MAX_ERROR_RATE:.1%}" in record["reason"]
            evidence = record["evidence"]["canary"]
            assert evidence["turns"] >= MIN_TURNS and evidence["error_rate"] > MAX_ERROR_RATE
            assert metric(metrics_text, "kefu_release_rollbacks_total", experiment="qwen3-canary", trigger="auto") == 1
            assert metric(metrics_text, "kefu_release_canary_share_percent", experiment="qwen3-canary") == 0
            assert metric(metrics_text, "kefu_release_errors_total", arm="canary", kind="fallback") >= MIN_TURNS
            assert experiments[0]["state"] == "rolled_back"

            # Customers never saw the canary's failures: the control model answered every one of those turns.
            customer_errors = [b for b in bodies if b["error"] is not None]
            assert len(customer_errors) / len(bodies) < MAX_ERROR_RATE
            assert customer_errors == []
            assert all(b["reply"] == CONTROL_REPLY for b in bodies)

            # What was stored: every reply names its arm; canary replies note the failure the control covered.
            # (The streamed canary sessions count too: the rule may roll back after a few of the 60 turns.)
            sessions = [*streamed_sessions, *(b["session_id"] for b in bodies)]
            replies = [m for sid in sessions for m in await services.store.list_messages(sid) if m.role == "assistant"]
            canary = [r for r in replies if r.arm == "canary"]
            control_arm = [r for r in replies if r.arm == "control"]
            assert len(canary) >= MIN_TURNS and control_arm
            assert all(r.experiment == "qwen3-canary" for r in replies)
            assert all(r.arm_error in ("llm_http_error", "llm_circuit_open") for r in canary)
            assert all(r.arm_error is None and r.error_code is None for r in control_arm)
            assert all(r.model == "control-model" for r in replies)

            # A session assigned to the canary before the rollback is answered by control from now on.
            canary_session = canary[0].session_id
            session = await services.store.get_session(canary_session)
            assert (session.experiment, session.arm) == ("qwen3-canary", "canary")
            async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
                owner = (await services.store.get_session(canary_session)).user_id
                again = await client.post(
                    "/v1/chat", json={"user_id": owner, "session_id": canary_session, "text": QUESTION}
                )
            assert again.status_code == 200 and again.json()["error"] is None
            latest = (await services.store.list_messages(canary_session))[-1]
            assert (latest.arm, latest.arm_error) == ("control", None)
