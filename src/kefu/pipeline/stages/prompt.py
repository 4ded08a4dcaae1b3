"""Assemble the chat prompt: the stable system prompt first, then recent history within a token budget."""

from __future__ import annotations

from typing import Any

from kefu.language import Language, estimate_tokens
from kefu.llm.types import Message
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.history import earlier_messages


class AssemblePrompt:
    """Builds `ctx.prompt`; older turns are dropped first when the history budget runs out."""

    name = "prompt"

    def __init__(self) -> None:
        # The system prompt depends only on the prompt library, the shop and the language, all fixed after
        # start-up: rendered once per language instead of once per turn (a template render and a file stat).
        self._rendered_for: tuple[Any, Any] | None = None
        self._system: dict[Language, str] = {}
        self._grounded: dict[Language, str] = {}

    def _system_prompt(self, deps: TurnDeps, language: Language, *, grounded: bool = False) -> str:
        source = self._rendered_for
        if source is None or source[0] is not deps.prompts or source[1] is not deps.shop:
            self._rendered_for, self._system, self._grounded = (deps.prompts, deps.shop), {}, {}
        cache = self._grounded if grounded else self._system
        system = cache.get(language)
        if system is None:
            system = cache[language] = deps.prompts.render(
                "system", shop=deps.shop, language=language, knowledge=grounded
            )
        return system

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        assert ctx.session is not None and ctx.customer_message is not None
        # With a knowledge base the system prompt is the grounded one on every turn, so its KV prefix stays reusable.
        grounded = deps.knowledge is not None and deps.knowledge.has_documents
        system = self._system_prompt(deps, ctx.language, grounded=grounded)
        if ctx.knowledge is not None:
            # The question is standalone (follow-ups were rewritten), so the prompt is the system prompt and the
            # passages only: on a CPU, prompt processing dominates latency.
            passages = [
                {"title": p.chunk.title, "section": p.chunk.section, "text": p.chunk.text}
                for p in ctx.knowledge.passages
            ]
            user = deps.prompts.render(
                "grounded", passages=passages, question=ctx.knowledge.query, language=ctx.language
            )
            ctx.prompt = [Message("system", system), Message("user", user)]
            return
        earlier = await earlier_messages(ctx, deps)
        budget = deps.settings.chat.history_tokens
        history: list[Message] = []
        for record in reversed(earlier):
            if record.role not in ("user", "assistant", "agent"):
                continue
            if record.error_code is not None:
                continue  # a fallback apology is not something the model said
            cost = estimate_tokens(record.redacted_text or record.text)
            if cost > budget:
                break
            budget -= cost
            # Customer messages that carried personal data are sent to the model only in redacted form.
            said = record.redacted_text if record.redacted_text is not None else record.text
            history.append(Message("user" if record.role == "user" else "assistant", said))
        history.reverse()
        ctx.history = history
        ctx.prompt = [Message("system", system), *history, Message("user", ctx.input.text)]
