"""Gray release: sticky assignment, the release file, the rollback rule, the canary fallback, the admin switches."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.errors import ConflictError, DataFileError, LLMUnavailableError
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import GenerationOptions, Message, StreamDone, TextDelta
from kefu.release import ArmTurn, ArmWindow, CanaryFallbackLLM, ExperimentState, RollbackRule, bucket
from kefu.release.monitor import judge
from kefu.release.spec import load_release_file, plan_arms
from kefu.release.state import ReleaseStates, next_state
from kefu.services import Services
from kefu.store.database import create_engine, migrate
from kefu.store.repository import ConversationStore
from tests.conftest import DEMO_SHOP, make_settings
from tests.integration.test_release_rollback import canary_sessions, metric
from tests.unit.test_cli import run_kefu

PASSWORD = "correct horse battery"
CONTROL_REPLY = "您好，这里是现在的客服模型。This is the current model."
CANARY_MODEL = "canary-model"
QUESTION = "你们的客服几点上班？"


def _state(state: str = "running", share: float = 10.0) -> ExperimentState:
    return ExperimentState(
        id="exp",
        state=state,  # type: ignore[arg-type]
        share=share,
        configured_share=share,
        reason=None,
        updated_by="test",
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        version=1,
    )


# ---------------------------------------------------------------- assignment


def test_the_share_of_10k_sessions_matches_and_assignment_is_stable() -> None:
    sessions = [uuid.uuid4().hex for _ in range(10_000)]
    for share in (1.0, 10.0, 50.0):
        state = _state(share=share)
        canary = [s for s in sessions if state.arm_for_new_session(bucket("qwen3", s)) == "canary"]
        expected = 10_000 * share / 100
        tolerance = 4 * (10_000 * share / 100 * (1 - share / 100)) ** 0.5  # four standard deviations
        assert abs(len(canary) - expected) <= tolerance, (share, len(canary))
    # The same session lands in the same bucket every time (on every worker: the hash is of the ids only).
    assert [bucket("qwen3", s) for s in sessions[:100]] == [bucket("qwen3", s) for s in sessions[:100]]
    # Raising the share only adds sessions: nobody in the canary at 10 % leaves it at 20 %.
    at_10 = {s for s in sessions if _state(share=10).arm_for_new_session(bucket("qwen3", s)) == "canary"}
    at_20 = {s for s in sessions if _state(share=20).arm_for_new_session(bucket("qwen3", s)) == "canary"}
    assert at_10 < at_20
    # Two experiments draw independently: their 10 % canaries overlap in about 1 % of sessions.
    other = {s for s in sessions if _state(share=10).arm_for_new_session(bucket("other", s)) == "canary"}
    assert 40 <= len(at_10 & other) <= 160


def test_states_decide_new_and_serving_arms() -> None:
    in_canary = next(b for b in range(10_000) if b < 1000)
    assert _state("running").arm_for_new_session(in_canary) == "canary"
    assert _state("paused").arm_for_new_session(in_canary) == "control"
    assert _state("rolled_back", 0).arm_for_new_session(in_canary) == "control"
    assert _state("promoted", 100).arm_for_new_session(9_999) == "canary"
    assert _state("paused").serving_arm("canary") == "canary"  # a pause keeps the canary's sessions on it
    assert _state("rolled_back", 0).serving_arm("canary") == "control"
    assert _state("promoted", 100).serving_arm("control") == "canary"


def test_switches_that_do_not_apply_are_conflicts() -> None:
    assert next_state(_state("running"), "pause", None) == ("paused", 10.0)
    assert next_state(_state("rolled_back", 0), "resume", 5) == ("running", 5)
    assert next_state(_state("paused"), "promote", None) == ("promoted", 100.0)
    for state, action, share in [
        ("rolled_back", "rollback", None),
        ("rolled_back", "resume", None),
        ("rolled_back", "share", 20),
        ("paused", "pause", None),
        ("rolled_back", "promote", None),
        ("running", "resume", None),
    ]:
        with pytest.raises(ConflictError):
            next_state(_state(state, 0 if state == "rolled_back" else 10), action, share)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the rollback rule


def test_the_rollback_rule() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    rule = RollbackRule(min_turns=20, max_error_rate=0.1, max_handoff_rate=0.5, max_handoff_increase=0.2)
    control = ArmWindow(turns=100, handoffs=10)

    def verdict(canary: ArmWindow, control: ArmWindow = control) -> tuple[bool, str]:
        v = judge(rule, {"canary": canary, "control": control}, since)
        return v.rollback, v.reason

    assert verdict(ArmWindow(turns=19, failed=19)) == (False, "19 canary turns, fewer than min_turns 20")
    assert verdict(ArmWindow(turns=20, failed=2))[0] is False  # 10 % is not more than 10 %
    rolled, reason = verdict(ArmWindow(turns=20, failed=3))
    assert rolled and "error rate 15.0% (3 of 20 turns) > 10.0%" in reason
    rolled, reason = verdict(ArmWindow(turns=40, handoffs=21))
    assert rolled and "handoff rate 52.5% (21 of 40 turns) > 50.0%" in reason
    rolled, reason = verdict(ArmWindow(turns=40, handoffs=13))  # 32.5 % against the control's 10 %
    assert rolled and "handoff rate +22.5% over control's (13/40 against 10/100)" in reason
    assert verdict(ArmWindow(turns=40, handoffs=13), ArmWindow(turns=5, handoffs=0))[0] is False  # control too small
    off = judge(rule.model_copy(update={"enabled": False}), {"canary": ArmWindow(40, 40), "control": control}, since)
    assert off.rollback is False


# ---------------------------------------------------------------- the canary's fallback


async def test_a_failing_canary_model_falls_back_to_the_control_model() -> None:
    canary = ScriptedLLM([LLMUnavailableError("connection refused")], model="canary")
    control = ScriptedLLM(["from control"], model="control")
    turn = ArmTurn("exp", "canary", "canary")
    answer = await CanaryFallbackLLM(canary, control, turn).complete([Message("user", "hi")], GenerationOptions())
    assert (answer.text, answer.model, turn.arm_error) == ("from control", "control", "llm_unavailable")

    # Streaming: before the first delta the control takes over; after it, the failure stands.
    canary.queue(LLMUnavailableError("down"))
    control.queue("streamed by control")
    turn = ArmTurn("exp", "canary", "canary")
    events = [e async for e in CanaryFallbackLLM(canary, control, turn).stream([], GenerationOptions())]
    assert isinstance(events[-1], StreamDone) and events[-1].completion.text == "streamed by control"
    assert turn.arm_error == "llm_unavailable"

    ok = ArmTurn("exp", "canary", "canary")
    canary.queue("the canary works")
    events = [e async for e in CanaryFallbackLLM(canary, control, ok).stream([], GenerationOptions())]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "the canary works" and ok.arm_error is None
    canary.assert_complete()
    control.assert_complete()


# ---------------------------------------------------------------- the release file


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "experiments:\n  - id: a\n    share: 10\n    canary:\n      prompt_version: v1\n"
            "  - id: b\n    share: 5\n    canary:\n      prompt_version: v1\n",
            1,
            "at most one experiment may be enabled at a time",
        ),
        ("experiments:\n  - id: a\n    share: 10\n    canary: {}\n", 2, "the canary changes nothing"),
        ("experiments:\n  - id: a\n    share: 120\n    canary:\n      prompt_version: v1\n", 3, "share"),
        ("experiments:\n  - id: a\n    share: 10\n    canary:\n      promt_version: v1\n", 5, "promt_version"),
    ],
)
def test_release_file_mistakes_name_the_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path / "release.yaml", text)
    with pytest.raises(DataFileError) as caught:
        load_release_file(path)
    assert f"{path}:{line}:" in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    ("canary", "line", "message"),
    [
        ("      llm:\n        backend: openai\n", 6, "canary.llm: Value error, backend 'openai' needs base_url"),
        ("      llm:\n        modle: qwen3\n", 6, "canary.llm.modle: Extra inputs are not permitted"),
        ("      llm:\n        api_key: sk-123\n", 6, "keys do not belong in data files"),
        ("      llm:\n        api_key_env: KEFU_TEST_NO_SUCH_KEY\n", 6, "KEFU_TEST_NO_SUCH_KEY is not set"),
        ("      prompt_version: v9\n", 5, "no prompt version 'v9'"),
        ("      flows_dir: flows-v2\n", 5, "canary.flows_dir: no directory"),
    ],
)
def test_arm_mistakes_name_the_file_and_line(tmp_path: Path, canary: str, line: int, message: str) -> None:
    path = _write(tmp_path / "release.yaml", f"experiments:\n  - id: a\n    share: 10\n    canary:\n{canary}")
    release = load_release_file(path)
    assert release.active is not None
    with pytest.raises(DataFileError) as caught:
        plan_arms(path, release, release.active, make_settings(tmp_path), env={})
    assert f"{path}:{line}:" in str(caught.value) and message in str(caught.value)


def test_an_arm_inherits_the_deployment_llm_settings_but_not_its_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "release.yaml",
        "experiments:\n  - id: a\n    share: 10\n    canary:\n      llm:\n        backend: openai\n"
        "        base_url: http://vllm:8000/v1\n        model: Qwen/Qwen3-8B\n        api_key_env: CANARY_KEY\n"
        "      prompt_version: v1\n",
    )
    settings = make_settings(
        tmp_path,
        llm={
            "backend": "openai",
            "base_url": "http://old/v1",
            "api_key": "old-key",
            "max_retries": 4,
            "roles": {"classification": {"model": "small"}},
        },
    )
    release = load_release_file(path)
    assert release.active is not None
    plans = plan_arms(path, release, release.active, settings, env={"CANARY_KEY": "new-key"})
    canary = plans["canary"].llm
    assert canary is not None and plans["control"].llm is None
    assert (canary.base_url, canary.model, canary.max_retries) == ("http://vllm:8000/v1", "Qwen/Qwen3-8B", 4)
    assert canary.api_key is not None and canary.api_key.get_secret_value() == "new-key"
    assert canary.for_role("classification").model == "small"
    no_key = plan_arms(path, release, release.active, settings.model_copy(), env={"CANARY_KEY": "k"})["canary"].llm
    assert no_key is not None and no_key.api_key is not None  # from api_key_env
    path.write_text(path.read_text().replace("        api_key_env: CANARY_KEY\n", ""))
    release = load_release_file(path)
    assert release.active is not None
    keyless = plan_arms(path, release, release.active, settings, env={})["canary"].llm
    assert keyless is not None and keyless.api_key is None  # the old endpoint's key is not sent to the new one


# ---------------------------------------------------------------- shared state


async def test_a_restart_keeps_a_rollback_and_a_new_share_in_the_file_relaunches(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'kefu.db'}")
    await migrate(engine)
    store = ConversationStore(engine)
    states = ReleaseStates(store)
    path = _write(
        tmp_path / "release.yaml", "experiments:\n  - id: a\n    share: 10\n    canary:\n      prompt_version: v1\n"
    )
    spec = load_release_file(path).experiments[0]
    try:
        assert (await states.configure(spec)).state == "running"
        await states.change("a", "rollback", actor="system:auto-rollback", reason="broken")
        again = await states.configure(spec)  # a restart with the same file
        assert (again.state, again.share) == ("rolled_back", 0.0)
        relaunched = await states.configure(spec.model_copy(update={"share": 5.0}))
        assert (relaunched.state, relaunched.share, relaunched.updated_by) == ("running", 5.0, "system:config")
        events = await store.audit_events(tenant_id="default", limit=10)
        assert [(e.actor, e.action) for e in reversed(events)] == [
            ("system:config", "release.configure"),
            ("system:auto-rollback", "release.rollback"),
            ("system:config", "release.configure"),
        ]
        assert events[0].data["before"] == {"state": "rolled_back", "share": 0.0}
        assert (await store.verify_audit_chain())[0]
    finally:
        await store.aclose()
        await engine.dispose()


# ---------------------------------------------------------------- the app


@pytest.fixture
async def release_app(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    release = {
        "experiments": [
            {
                "id": "new-model",
                "share": 50,
                "canary": {"llm": {"backend": "testing", "model": CANARY_MODEL}},
                "rollback": {"min_turns": 1000},
            },
            {"id": "old-one", "enabled": False, "share": 5, "canary": {"prompt_version": "v1"}},
        ]
    }
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(release), encoding="utf-8")
    settings = make_settings(tmp_path, release={"file": path})
    app = create_app(settings, llm=ScriptedLLM(model="control-model", default_reply=CONTROL_REPLY))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client:
            yield app, client


async def _chat(client: httpx.AsyncClient, user: str, session_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user, "text": QUESTION}
    if session_id is not None:
        body["session_id"] = session_id
    resp = await client.post("/v1/chat", json=body)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def _arm_of(services: Services, session_id: str) -> tuple[str | None, str | None]:
    reply = (await services.store.list_messages(session_id))[-1]
    return reply.arm, reply.model


async def test_sessions_keep_their_arm_and_every_switch_is_audited(
    release_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = release_app
    services: Services = app.state.services
    first = [await _chat(client, f"c{n}") for n in range(40)]
    arms = {b["session_id"]: await _arm_of(services, b["session_id"]) for b in first}
    canary = [s for s, (arm, _) in arms.items() if arm == "canary"]
    control = [s for s, (arm, _) in arms.items() if arm == "control"]
    assert 8 <= len(canary) <= 32 and len(canary) + len(control) == 40
    # Each arm ran its own model, and the session carries its assignment.
    assert {arms[s] for s in canary} == {("canary", CANARY_MODEL)}
    assert {arms[s] for s in control} == {("control", "control-model")}
    stored = await services.store.get_session(canary[0])
    assert (stored.experiment, stored.arm) == ("new-model", "canary")

    async def again(session_id: str) -> str | None:
        owner = (await services.store.get_session(session_id)).user_id
        await _chat(client, owner, session_id)
        return (await _arm_of(services, session_id))[0]

    # A share change touches new sessions only; a pause stops new ones joining; both keep assigned sessions.
    changed = await client.post("/v1/admin/release/experiments/new-model/share", json={"share": 0, "reason": "x"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["before"] == {"state": "running", "share": 50.0}
    assert await again(canary[0]) == "canary" and await again(control[0]) == "control"
    late = [(await _chat(client, f"late{n}"))["session_id"] for n in range(5)]
    assert [(await _arm_of(services, s))[0] for s in late] == ["control"] * 5

    assert (await client.post("/v1/admin/release/experiments/new-model/pause", json={})).status_code == 200
    assert await again(canary[1]) == "canary"
    # Promotion sends everyone to the canary; a rollback sends everyone to control.
    assert (await client.post("/v1/admin/release/experiments/new-model/promote", json={})).status_code == 200
    assert await again(control[1]) == "canary"
    rolled = await client.post("/v1/admin/release/experiments/new-model/rollback", json={"reason": "done testing"})
    assert rolled.json()["after"] == {"state": "rolled_back", "share": 0.0}
    assert await again(canary[2]) == "control"
    twice = await client.post("/v1/admin/release/experiments/new-model/rollback", json={})
    assert twice.status_code == 409 and "already rolled back" in twice.text
    no_share = await client.post("/v1/admin/release/experiments/new-model/resume", json={})
    assert no_share.status_code == 409 and "resume it with a share" in no_share.text
    assert (await client.post("/v1/admin/release/experiments/nope/pause", json={})).status_code == 404
    assert (await client.post("/v1/admin/release/experiments/new-model/share", json={"share": 101})).status_code == 422

    audit = (await client.get("/v1/admin/audit", params={"limit": 1000})).json()
    switches = [(e["action"], e["actor"], e["data"]["after"]) for e in reversed(audit) if e["target"] == "new-model"]
    assert switches == [
        ("release.configure", "system:config", {"state": "running", "share": 50.0}),
        ("release.share", "operator:open-mode", {"state": "running", "share": 0.0}),
        ("release.pause", "operator:open-mode", {"state": "paused", "share": 0.0}),
        ("release.promote", "operator:open-mode", {"state": "promoted", "share": 100.0}),
        ("release.rollback", "operator:open-mode", {"state": "rolled_back", "share": 0.0}),
    ]
    assert next(e for e in audit if e["action"] == "release.rollback")["data"]["reason"] == "done testing"

    listed = (await client.get("/v1/admin/release/experiments")).json()
    assert [(e["id"], e["enabled"], e["state"]) for e in listed] == [
        ("new-model", True, "rolled_back"),
        ("old-one", False, None),
    ]
    arms_out = {a["name"]: a for a in listed[0]["arms"]}
    assert arms_out["canary"]["models"]["chat"] == CANARY_MODEL and arms_out["canary"]["llm_model"] == CANARY_MODEL
    assert arms_out["control"]["models"]["chat"] == "control-model"
    assert arms_out["canary"]["window"]["turns"] + arms_out["control"]["window"]["turns"] >= 40

    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "kefu_release_turns_total", experiment="new-model", arm="canary") >= len(canary)
    assert metric(metrics, "kefu_release_rollbacks_total", experiment="new-model", trigger="manual") == 1
    assert metric(metrics, "kefu_release_state", experiment="new-model", state="rolled_back") == 1

    # Analytics per arm count each conversation for the arm it was assigned to at its first turn.
    now = datetime.now(UTC)
    report = (
        await client.get(
            "/v1/admin/analytics",
            params={"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(minutes=1)).isoformat()},
        )
    ).json()
    by_arm = {(a["experiment"], a["arm"]): a for a in report["arms"]}
    assert by_arm[("new-model", "canary")]["conversations"] >= len(canary)
    assert by_arm[("new-model", "control")]["conversations"] >= len(control)
    assert sum(a["conversations"] for a in report["arms"]) == report["conversations"]
    assert by_arm[("new-model", "canary")]["errors"] == 0 and by_arm[("new-model", "canary")]["avg_latency_ms"] > 0


async def test_switches_need_the_admin_role(release_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = release_app
    accounts = app.state.services.access.accounts
    await accounts.create_operator(username="watcher", password=PASSWORD, role="viewer", tenant_id="default")
    login = await client.post("/v1/auth/login", json={"username": "watcher", "password": PASSWORD})
    viewer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert (await client.get("/v1/admin/release/experiments", headers=viewer)).status_code == 200
    refused = await client.post("/v1/admin/release/experiments/new-model/rollback", json={}, headers=viewer)
    assert refused.status_code == 403
    assert (await client.post("/v1/admin/release/experiments/new-model/rollback", json={})).status_code == 401
    state = await app.state.services.release.states.get("new-model")
    assert state.state == "running"


# ---------------------------------------------------------------- the command line


async def test_the_cli_lists_and_switches_with_an_audit_record(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "release.yaml", "experiments:\n  - id: a\n    share: 10\n    canary:\n      prompt_version: v1\n"
    )
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'kefu.db'}")
    await migrate(engine)
    store = ConversationStore(engine)
    try:
        await ReleaseStates(store).configure(load_release_file(path).experiments[0])
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
        env.update(
            {
                "KEFU_DATA_DIR": str(tmp_path / "data"),
                "KEFU_CONFIG": str(tmp_path / "none.yaml"),
                "KEFU_RELEASE__FILE": str(path),
            }
        )
        rolled = await asyncio.to_thread(run_kefu, "release", "rollback", "a", "--reason", "bad answers", env=env)
        assert rolled.returncode == 0, rolled.stderr
        assert "a: running 10% -> rolled_back 0%" in rolled.stdout
        listed = await asyncio.to_thread(run_kefu, "release", "list", env=env)
        assert "a: rolled_back, canary share 0% — cli at" in listed.stdout and "(bad answers)" in listed.stdout
        again = await asyncio.to_thread(run_kefu, "release", "rollback", "a", env=env)
        assert again.returncode == 2 and "already rolled back" in again.stderr
        event = (await store.audit_events(tenant_id="default", action="release.rollback"))[0]
        assert (event.actor, event.data["before"], event.data["reason"]) == (
            "cli",
            {"state": "running", "share": 10.0},
            "bad answers",
        )
    finally:
        await store.aclose()
        await engine.dispose()


async def test_a_canary_with_its_own_flows_asks_its_own_questions(tmp_path: Path) -> None:
    original = "请提供您的订单号（以 LM 开头，例如 LM26110625），可在“我的订单”里找到。"
    changed = "【新版流程】请发给我订单号，LM 开头的 10 位。"
    flows = tmp_path / "flows-v2"
    flows.mkdir()
    for source in (DEMO_SHOP / "flows").glob("*.yaml"):
        (flows / source.name).write_text(source.read_text(encoding="utf-8").replace(original, changed), "utf-8")
    path = _write(
        tmp_path / "release.yaml",
        "experiments:\n  - id: flows-v2\n    share: 50\n    canary:\n      flows_dir: flows-v2\n",
    )
    app = create_app(make_settings(tmp_path, release={"file": path}), llm=ScriptedLLM(default_reply="LLM"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client:
            replies = {}
            for arm, sid in (("canary", canary_sessions(1, "flows-v2")[0]), ("control", uuid.uuid4().hex)):
                if arm == "control":
                    while bucket("flows-v2", sid) < 5000:
                        sid = uuid.uuid4().hex
                body = {"user_id": f"u-{sid}", "session_id": sid, "text": "我想查一下我的订单到哪了"}
                replies[arm] = (await client.post("/v1/chat", json=body)).json()["reply"]
    assert changed in replies["canary"] and original not in replies["canary"]
    assert original in replies["control"]
