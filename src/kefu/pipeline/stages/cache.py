"""The answer cache in a turn: an exact repeat is answered before understanding, a paraphrase after retrieval,
and a finished, non-personal knowledge answer is kept for the next customer (rules: `cache_policy`).

A hit finishes the turn with route `cache` and the answer's citations; `trace["cache"]` says which lookup hit,
how the answer was first made (`faq` or `knowledge`) and how old it is. The output guard still checks it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kefu.cache.entry import CachedAnswer
from kefu.pipeline.context import Citation, TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.history import earlier_messages
from kefu.pipeline.stages.cache_policy import (
    AnswerNamespaces,
    answers_alike,
    question_blocker,
    semantic_intent,
    store_blocker,
    text_blocker,
)
from kefu.pipeline.stages.grounding import SentenceGate
from kefu.pipeline.stages.knowledge import dense_query, follow_knowledge
from kefu.pipeline.stages.understand import dialogue_state

CACHE_ROUTE = "cache"


async def _serve(ctx: TurnContext, entry: CachedAnswer, trace: dict[str, Any]) -> None:
    ctx.citations = [
        Citation(title=c["title"], source=c["source"], url=c.get("url"), snippet=c.get("snippet"))
        for c in entry.citations
    ]
    ctx.trace["cache"] = {
        **trace,
        "route": entry.route,
        "knowledge_version": entry.knowledge_version,
        "age_s": round(entry.age_s(), 1),
    }
    ctx.finish(entry.reply, route=CACHE_ROUTE)
    if ctx.events.streaming:
        await ctx.events.delta(entry.reply)


async def _nothing() -> None:
    return None


class ServeCachedAnswer:
    """Answers a question asked before in the same words: no embedding, retrieval or model call.

    Runs after the input guard (the message is stored, checked and redacted) and before understanding. A session
    in the middle of a task, or whose earlier turns would send it to a person, goes through the whole pipeline.
    """

    name = "cache"

    def __init__(self) -> None:
        self._namespaces = AnswerNamespaces()

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        cache, knowledge = deps.answer_cache, deps.knowledge
        if cache is None or not cache.settings.exact or knowledge is None or ctx.done or ctx.silent:
            return
        assert ctx.session is not None
        if ctx.session.owner != "bot" or text_blocker(ctx) is not None:
            return
        if ctx.new_session:
            await follow_knowledge(ctx, knowledge)
        else:
            # The reads this turn needs whatever answers it, queued together: one wait instead of three.
            allowed, _ = await asyncio.gather(self._session_allows(ctx, deps), follow_knowledge(ctx, knowledge))
            if not allowed:
                return
        if not knowledge.has_documents:
            return
        await cache.follow_knowledge(knowledge.version)
        ns = self._namespaces(deps, knowledge.version, ctx)
        entry = await cache.exact(ns, ctx.session.tenant_id, ctx.language, ctx.input.text)
        if entry is not None:
            ctx.intent = entry.intent
            await _serve(ctx, entry, {"hit": "exact"})

    @staticmethod
    async def _session_allows(ctx: TurnContext, deps: TurnDeps) -> bool:
        """No task under way, and nothing in the conversation that would route this turn elsewhere."""
        assert ctx.session is not None and ctx.customer_message is not None
        dialogue, earlier = await asyncio.gather(
            deps.dialogue.states.load(ctx.session.id) if deps.dialogue is not None else _nothing(),
            earlier_messages(ctx, deps),  # understanding and the prompt read them later
        )
        if dialogue is not None:
            # Kept for the flow stage, and for the unresolved stage, which resets the streak after an answer.
            ctx.dialogue = dialogue
            if dialogue.active is not None:
                return False  # the flow decides what this message means (a slot value, a digression)
        if deps.understanding is not None:
            mood = dialogue_state(earlier, ctx.session.owner)
            if mood.negative_streak or mood.failed_replies:
                return False  # the router weighs these towards a person
        return True


class ServeSimilarAnswer:
    """Answers a paraphrase of a cached model answer, after retrieval and before the prompt: same tenant, language
    and intent, a question embedding at least `semantic_threshold` similar, and the same knowledge under both
    (`answers_alike`)."""

    name = "cache_semantic"

    def __init__(self) -> None:
        self._namespaces = AnswerNamespaces()

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        cache, knowledge, turn = deps.answer_cache, deps.knowledge, ctx.knowledge
        if cache is None or not cache.settings.semantic or knowledge is None or turn is None:
            return
        intent = semantic_intent(ctx)
        if ctx.done or ctx.route != "knowledge" or intent is None or question_blocker(ctx) is not None:
            return
        assert ctx.session is not None
        version = ctx.trace.get("knowledge", {}).get("version", knowledge.version)
        scope = self._namespaces(deps, int(version), ctx).scope(ctx.session.tenant_id, ctx.language, intent)
        vector = await knowledge.embed_query(dense_query(ctx, turn.query))  # understanding embedded it: a cache lookup
        terms = knowledge.tokenizer.terms(turn.query)

        def alike(entry: CachedAnswer) -> bool:
            return answers_alike(entry.terms, entry.passages, terms, turn.passages, knowledge.tokenizer)

        hit = await cache.similar(scope, vector, alike)
        if hit is None:
            return
        entry, similarity = hit
        if isinstance(ctx.events, SentenceGate):
            ctx.events = ctx.events.inner  # the cached answer passed its grounding check when it was written
        await _serve(ctx, entry, {"hit": "semantic", "similarity": round(similarity, 4), "question": entry.question})


class StoreAnswer:
    """Keeps a finished knowledge answer (exact key; model answers also by meaning) unless a rule forbids it."""

    name = "cache_store"
    runs_after_finish = True

    def __init__(self) -> None:
        self._namespaces = AnswerNamespaces()

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        cache, knowledge = deps.answer_cache, deps.knowledge
        if cache is None or knowledge is None or ctx.session is None or ctx.route == CACHE_ROUTE:
            return
        trace = ctx.trace.get("knowledge")
        if not isinstance(trace, dict) or "version" not in trace:
            return  # the knowledge stage did not answer this turn (a flow, a handoff, small talk)
        blocked = store_blocker(ctx, deps)
        if blocked is not None:
            cache.skipped(blocked)
            return
        version = int(trace["version"])
        await cache.follow_knowledge(knowledge.version)  # also when exact lookups are switched off
        if version != knowledge.version:
            cache.skipped("not_an_answer")  # the knowledge changed while this answer was being written
            return
        assert ctx.route is not None
        ns = self._namespaces(deps, version, ctx)
        scope = vector = None
        passages: list[str] = []
        terms: list[str] = []
        turn = ctx.knowledge
        intent = semantic_intent(ctx)
        if ctx.route == "knowledge" and cache.settings.semantic and intent is not None and turn is not None:
            scope = ns.scope(ctx.session.tenant_id, ctx.language, intent)
            vector = await knowledge.embed_query(dense_query(ctx, turn.query))
            passages = [p.chunk.id for p in turn.passages]
            terms = knowledge.tokenizer.terms(turn.query)
        entry = CachedAnswer(
            reply=ctx.reply,
            citations=[c.as_dict() for c in ctx.citations],
            intent=ctx.intent,
            route=ctx.route,
            language=ctx.language,
            question=ctx.input.text,
            knowledge_version=version,
            model=ctx.model,
            passages=passages,
            terms=terms,
        )
        await cache.put(ns, ctx.session.tenant_id, ctx.input.text, entry, scope=scope, vector=vector)
