"""Per-role model configuration: which roles share one backend instance, and their defaults."""

from __future__ import annotations

from pathlib import Path

from kefu.config import LLMSettings
from kefu.llm.registry import RoleDefaults, build_role_backends
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import GenerationOptions, Message


async def test_roles_without_overrides_share_one_backend(tmp_path: Path) -> None:
    llms = build_role_backends(LLMSettings(backend="testing"), tmp_path)
    assert llms["chat"] is llms["classification"] is llms["rewrite"]


async def test_generation_overrides_share_the_model_but_keep_their_defaults(tmp_path: Path) -> None:
    settings = LLMSettings.model_validate(
        {"backend": "testing", "max_tokens": 300, "roles": {"classification": {"max_tokens": 16, "temperature": 0}}}
    )
    llms = build_role_backends(settings, tmp_path)
    classifier = llms["classification"]
    assert isinstance(classifier, RoleDefaults) and classifier.backend is llms["chat"]
    shared = llms["chat"]
    assert isinstance(shared, ScriptedLLM)
    shared.queue("intent: returns")
    await classifier.complete([Message("user", "我要退货")], GenerationOptions())
    assert shared.calls[0].options.max_tokens == 16 and shared.calls[0].options.temperature == 0
    shared.queue("explicit")
    await classifier.complete([Message("user", "x")], GenerationOptions(max_tokens=5))
    assert shared.calls[1].options.max_tokens == 5


async def test_a_different_model_gets_its_own_backend(tmp_path: Path) -> None:
    settings = LLMSettings.model_validate({"backend": "testing", "roles": {"rewrite": {"model": "small"}}})
    llms = build_role_backends(settings, tmp_path)
    assert llms["rewrite"] is not llms["chat"] and llms["rewrite"].model == "small"
