"""Prompts are laid out stable part first, so a model server's prefix cache serves every turn of every customer.

The system prompt (the shop, its rules) must be byte-for-byte the same in every session and turn, with nothing
per-request in it; a session's next turn must start with its previous turn's prompt.
"""

from __future__ import annotations

import json

import httpx

from kefu.config import LLMBackendSettings
from kefu.llm.openai import OpenAICompatibleLLM
from kefu.llm.testing import RecordedCall, ScriptedLLM
from kefu.llm.types import GenerationOptions

TURNS = {
    "alice": ("zh", ["会员积分怎么用？", "积分会过期吗？"]),
    "carol": ("zh", ["发票怎么开？", "可以开专票吗？"]),
    "bob": ("en", ["How is shipping charged?", "Can I pay with points?"]),
}


def wire(call: RecordedCall) -> str:
    """The request body an OpenAI-compatible server (vLLM, llama.cpp) receives for this call, as sent."""
    settings = LLMBackendSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", cache_prompt=True)
    llm = OpenAICompatibleLLM(settings, httpx.AsyncHTTPTransport())
    body = llm._request_body(call.messages, GenerationOptions(), stream=True)
    return json.dumps(body, ensure_ascii=False)


async def test_every_turn_of_every_session_shares_the_system_prefix(
    client: httpx.AsyncClient, llm: ScriptedLLM
) -> None:
    llm.default_reply = "好的。OK."
    sessions: dict[str, str] = {}
    prompts: dict[str, list[RecordedCall]] = {}
    for turn in range(2):
        for user, (_, texts) in TURNS.items():
            before = len(llm.calls)
            body = {"user_id": user, "text": texts[turn], "session_id": sessions.get(user)}
            answer = (await client.post("/v1/chat", json=body)).json()
            assert answer["error"] is None and answer["reply"] == "好的。OK.", answer
            sessions[user] = answer["session_id"]
            (chat,) = llm.calls[before:]
            prompts.setdefault(user, []).append(chat)
    for language in ("zh", "en"):
        calls = [call for user, (lang, _) in TURNS.items() if lang == language for call in prompts[user]]
        systems = {call.messages[0].content for call in calls}
        assert len(systems) == 1, f"the {language} system prompt differs between turns or sessions"
        (system,) = systems
        assert not any(session in system for session in sessions.values())  # nothing per-session in it
        # On the wire too: every request's bytes up to the end of the system message are identical.
        encoded = json.dumps(system, ensure_ascii=False)
        bodies = [wire(call) for call in calls]
        end = bodies[0].index(encoded) + len(encoded)
        assert {body[:end] for body in bodies} == {bodies[0][:end]}
    assert prompts["alice"][0].messages[0] != prompts["bob"][0].messages[0]  # one cached prefix per language
    for user in TURNS:
        # A session's next turn extends its previous prompt: all of it is reused, only the new exchange is added.
        earlier, later = prompts[user]
        assert later.messages[: len(earlier.messages)] == earlier.messages
        assert [m.role for m in later.messages[len(earlier.messages) :]] == ["assistant", "user"]
