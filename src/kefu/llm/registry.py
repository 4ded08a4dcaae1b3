"""Builds LLM backends from settings; each backend kind registers one factory, built-ins included.

Every backend `build_backend` returns sits behind its own concurrency limiter (`kefu.llm.limiter`), so anything
built here, per role or per experiment, keeps the configured limit and fair queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from kefu.config import LLMBackendSettings, LLMSettings
from kefu.errors import ConfigError
from kefu.llm.base import LLMBackend
from kefu.llm.limiter import FairLimiter, LimitedLLM
from kefu.llm.types import Completion, GenerationOptions, LLMRole, Message, StreamEvent

BackendFactory = Callable[[LLMBackendSettings, Path], LLMBackend]
_FACTORIES: dict[str, BackendFactory] = {}
ROLES: tuple[LLMRole, ...] = ("chat", "classification", "rewrite")
_PER_CALL = {"max_tokens", "temperature"}
"""Settings that only change a call's defaults: roles differing only in these share one backend."""
_QUEUE = ("max_concurrency", "max_queue", "queue_timeout_s")
"""Settings of the backend's one limiter: roles sharing a backend must agree on them."""

TESTING_DEFAULT_REPLY = "您好，我是测试模式下的客服助手。Hello, this is the kefu test backend."


def register_backend(kind: str, factory: BackendFactory) -> None:
    _FACTORIES[kind] = factory


def _embedded(settings: LLMBackendSettings, data_dir: Path) -> LLMBackend:
    try:
        from kefu.llm.embedded import EmbeddedLLM
    except ImportError as exc:
        raise ConfigError(
            f"the embedded backend needs the 'embedded' extra (pip install 'kefu[embedded]'): {exc}"
        ) from None
    return EmbeddedLLM.from_settings(settings, data_dir)


def _openai(settings: LLMBackendSettings, data_dir: Path) -> LLMBackend:
    from kefu.llm.openai import OpenAICompatibleLLM

    return OpenAICompatibleLLM.from_settings(settings)


def _testing(settings: LLMBackendSettings, data_dir: Path) -> LLMBackend:
    from kefu.llm.testing import ScriptedLLM

    return ScriptedLLM(model=settings.model, default_reply=TESTING_DEFAULT_REPLY)


register_backend("embedded", _embedded)
register_backend("openai", _openai)
register_backend("testing", _testing)


def build_backend(settings: LLMBackendSettings, data_dir: Path) -> LLMBackend:
    try:
        factory = _FACTORIES[settings.backend]
    except KeyError:
        raise ConfigError(
            f"KEFU_LLM__BACKEND: unknown backend {settings.backend!r}; known: {sorted(_FACTORIES)}"
        ) from None
    backend = factory(settings, data_dir)
    return LimitedLLM(backend, FairLimiter.from_settings(backend.name, settings))


class RoleDefaults:
    """Applies one role's generation defaults (max_tokens, temperature) over a shared backend."""

    def __init__(self, backend: LLMBackend, *, max_tokens: int, temperature: float) -> None:
        self.backend = backend
        self._max_tokens = max_tokens
        self._temperature = temperature

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    def _fill(self, options: GenerationOptions) -> GenerationOptions:
        return replace(
            options,
            max_tokens=options.max_tokens if options.max_tokens is not None else self._max_tokens,
            temperature=options.temperature if options.temperature is not None else self._temperature,
        )

    async def complete(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        return await self.backend.complete(messages, self._fill(options))

    def stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[StreamEvent]:
        return self.backend.stream(messages, self._fill(options))

    async def check(self) -> str:
        return await self.backend.check()

    async def aclose(self) -> None:
        await self.backend.aclose()


def build_role_backends(settings: LLMSettings, data_dir: Path) -> dict[LLMRole, LLMBackend]:
    """One backend per distinct endpoint or model; roles differing only in generation defaults share it.

    Sharing matters most for the embedded backend, where each instance holds a ~2 GB model in memory.
    """
    built: dict[str, tuple[LLMBackend, LLMRole, LLMBackendSettings]] = {}
    by_role: dict[LLMRole, LLMBackend] = {}
    for role in ROLES:
        role_settings = settings.for_role(role)
        key = role_settings.model_dump_json(exclude={*_PER_CALL, *_QUEUE})
        if key not in built:
            built[key] = (build_backend(role_settings, data_dir), role, role_settings)
        shared, first_role, first_settings = built[key]
        _check_same_queue(role, role_settings, first_role, first_settings)
        if (role_settings.max_tokens, role_settings.temperature) == (settings.max_tokens, settings.temperature):
            by_role[role] = shared
        else:
            by_role[role] = RoleDefaults(
                shared, max_tokens=role_settings.max_tokens, temperature=role_settings.temperature
            )
    return by_role


def _check_same_queue(
    role: LLMRole, settings: LLMBackendSettings, other: LLMRole, other_settings: LLMBackendSettings
) -> None:
    for name in _QUEUE:
        if getattr(settings, name) != getattr(other_settings, name):
            raise ConfigError(
                f"KEFU_LLM__ROLES__{role.upper()}__{name.upper()}: the {role} role shares one backend (and its one "
                f"queue) with the {other} role, which has {name}={getattr(other_settings, name)}; give both roles "
                f"the same {name}, or point {role} at another model or base_url"
            )
