"""Knowledge first: follow-up rewriting → curated answer (no LLM) → retrieval → passages for the model, or an honest no.

Runs for turns no earlier stage has routed. A curated FAQ match ends the turn with the answer verbatim; a
question the knowledge base does not cover ends it with one sentence and the offer of a human, and is recorded
as a gap for operators; otherwise the passages go to prompt assembly and the grounding check.
"""

from __future__ import annotations

import re
import time
import unicodedata

from kefu.knowledge.grounding import GroundingChecker
from kefu.knowledge.rewrite import QueryRewriter, Rewrite, looks_like_follow_up
from kefu.knowledge.service import KnowledgeService
from kefu.knowledge.types import KnowledgeTurn
from kefu.llm.types import Message
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.history import earlier_messages
from kefu.pipeline.stages.grounding import SentenceGate
from kefu.pipeline.stages.knowledge_replies import citation, decline, source_texts

_HISTORY_MESSAGES = 6
_SMALL_TALK = frozenset(
    """
    你好 您好 在吗 在不在 有人吗 哈喽 嗨 早上好 下午好 晚上好 谢谢 谢谢你 谢谢您 多谢 感谢 好的 好 嗯 嗯嗯 哦
    收到 明白 知道了 没事了 没有了 没问题 再见 拜拜 辛苦了
    ok okay hi hello hey thanks thankyou thx ty great cool bye goodbye yes no sure
    goodmorning goodevening noproblem thatsall gotit
    """.split()
)
"""Greetings, thanks and acknowledgements: no knowledge question in them, so the model answers them freely."""
_KNOWLEDGE_ROUTES = (None, "faq", "knowledge")


def is_small_talk(text: str) -> bool:
    key = re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).lower())
    return not key or key in _SMALL_TALK


def _routed_to_small_talk(ctx: TurnContext) -> bool:
    """The understanding stage (when installed) recognised a greeting, thanks or goodbye."""
    understanding = getattr(ctx, "understanding", None)
    route = getattr(understanding, "route", None)
    return getattr(route, "handler", None) == "small_talk"


def dense_query(ctx: TurnContext, query: str) -> str:
    """The text whose embedding stands for `query`: when it is the customer's message itself, the text understanding
    embedded (without order and tracking numbers), so a turn embeds once and retrieval reads what it is about."""
    understanding = ctx.understanding
    if understanding is not None and understanding.semantic_text is not None and query == understanding.text:
        return understanding.semantic_text
    return query


async def follow_knowledge(ctx: TurnContext, knowledge: KnowledgeService) -> None:
    """Bring the knowledge base to the shared version, once per turn: the answer cache and the knowledge stage both
    need it, and a turn answers from one version. The intake read that version with the customer's message; a
    turn without it (a pipeline that skips the intake) reads it here."""
    if not ctx.knowledge_followed:
        await knowledge.refresh(version=ctx.knowledge_version)
        ctx.knowledge_followed = True


class AnswerFromKnowledge:
    """Ends the turn with a curated answer or an honest decline, or sets `ctx.knowledge` for a grounded answer."""

    name = "knowledge"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        knowledge = deps.knowledge
        if knowledge is None or ctx.route not in _KNOWLEDGE_ROUTES:
            return  # another stage (a flow, a handoff, small talk) claimed the turn
        assert ctx.session is not None
        started = time.perf_counter()
        await follow_knowledge(ctx, knowledge)
        trace: dict[str, object] = {"version": knowledge.version}
        ctx.trace["knowledge"] = trace
        trace["refresh_ms"] = round((time.perf_counter() - started) * 1000, 3)
        if not knowledge.has_documents or is_small_talk(ctx.input.text) or _routed_to_small_talk(ctx):
            trace["skipped"] = "empty knowledge base" if not knowledge.has_documents else "small talk"
            return
        tenant = ctx.session.tenant_id
        rewrite = await self._rewrite(ctx, deps)
        query = rewrite.query
        trace["query"] = query
        trace["rewrite"] = rewrite.method
        # An exact phrasing of a curated question needs no embedding at all.
        match = knowledge.exact_curated(query, tenant_id=tenant)
        vector = None
        if match is None:
            vector = await knowledge.embed_query(dense_query(ctx, query))
            match = knowledge.best_curated(query, vector, tenant_id=tenant, language=ctx.language)
        if match is not None:
            trace["curated"] = {
                "question": match.row.question,
                "variant": match.variant,
                "score": round(match.score, 4),
            }
        if knowledge.curated_answer(query, match):
            assert match is not None
            ctx.citations = [citation(match.row.info)]
            ctx.finish(match.row.answer, route="faq")
            return

        if vector is None:
            vector = await knowledge.embed_query(dense_query(ctx, query))
        hits = await knowledge.search(query, tenant_id=tenant, language=ctx.language, vector=vector)
        coverage = knowledge.coverage(query, hits)
        trace["hits"] = [h.as_trace() for h in hits]
        trace["coverage"] = coverage.as_trace()
        if not coverage.answerable:
            await decline(ctx, deps, knowledge, query, reason="not_covered")
            return
        passages = knowledge.passages(hits)
        ctx.knowledge = KnowledgeTurn(
            query=query, passages=passages, best_dense=coverage.best_dense, lexical=coverage.lexical
        )
        ctx.route = "knowledge"
        if ctx.events.streaming:
            # Streamed sentences are released only once checked, so nothing unchecked reaches the customer.
            checker = GroundingChecker(knowledge.tokenizer, min_overlap=knowledge.settings.grounding_overlap)
            sources = checker.sources(source_texts(passages, deps))
            ctx.events = SentenceGate(
                ctx.events, checker, sources, keep_markers=knowledge.settings.show_citation_markers
            )

    async def _rewrite(self, ctx: TurnContext, deps: TurnDeps) -> Rewrite:
        assert deps.knowledge is not None and ctx.session is not None
        rewriter = QueryRewriter(deps.prompts, deps.knowledge.settings.rewrite)
        if ctx.new_session or rewriter.mode == "off":
            return Rewrite(ctx.input.text, "none")
        if not looks_like_follow_up(ctx.input.text):
            return Rewrite(ctx.input.text, "none")
        history = [
            Message(
                "user" if r.role == "user" else "assistant",
                r.redacted_text if r.redacted_text is not None else r.text,
            )
            for r in (await earlier_messages(ctx, deps))[-_HISTORY_MESSAGES:]
            if r.role in ("user", "assistant", "agent") and r.error_code is None
        ]
        result = await rewriter.rewrite(ctx.input.text, history, ctx.language, deps.llms.get("rewrite"))
        if result.usage is not None:
            ctx.trace["rewrite_usage"] = {
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
            }
        return result
