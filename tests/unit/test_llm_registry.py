"""Per-role model configuration: which roles share one backend instance, and their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from kefu.config import LLMSettings
from kefu.errors import ConfigError
from kefu.llm.limiter import LimitedLLM, limiters_of
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
    limited = llms["chat"]
    assert isinstance(limited, LimitedLLM)
    shared = limited.backend
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


async def test_roles_sharing_a_backend_share_its_one_limiter(tmp_path: Path) -> None:
    settings = LLMSettings.model_validate(
        {"backend": "testing", "max_concurrency": 3, "roles": {"classification": {"temperature": 0}}}
    )
    llms = build_role_backends(settings, tmp_path)
    (limiter,) = limiters_of(llms.values())
    assert limiter.max_concurrency == 3 and limiter.max_queue == 256


async def test_default_limits_are_one_request_per_slot_or_32_for_a_server(tmp_path: Path) -> None:
    settings = LLMSettings.model_validate(
        {"backend": "testing", "roles": {"rewrite": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}}
    )
    llms = build_role_backends(settings, tmp_path)
    chat, rewrite = limiters_of([llms["chat"]]), limiters_of([llms["rewrite"]])
    assert chat[0].max_concurrency == 32 and rewrite[0].max_concurrency == 32
    assert chat[0] is not rewrite[0]
    await llms["rewrite"].aclose()


async def test_a_role_on_its_own_endpoint_has_its_own_limit(tmp_path: Path) -> None:
    settings = LLMSettings.model_validate(
        {"backend": "testing", "roles": {"rewrite": {"model": "small", "max_concurrency": 2, "queue_timeout_s": 5}}}
    )
    llms = build_role_backends(settings, tmp_path)
    (rewrite,) = limiters_of([llms["rewrite"]])
    assert (rewrite.max_concurrency, rewrite.timeout_s) == (2, 5)


def test_roles_sharing_a_backend_must_agree_on_its_queue(tmp_path: Path) -> None:
    settings = LLMSettings.model_validate({"backend": "testing", "roles": {"classification": {"max_concurrency": 4}}})
    with pytest.raises(ConfigError) as raised:
        build_role_backends(settings, tmp_path)
    assert "KEFU_LLM__ROLES__CLASSIFICATION__MAX_CONCURRENCY" in str(raised.value)
    assert "shares one backend" in str(raised.value)
