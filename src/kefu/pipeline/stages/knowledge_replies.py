"""What knowledge turns tell the customer besides the answer: citations, and the honest "I don't know"."""

from __future__ import annotations

from kefu.knowledge.service import KnowledgeService
from kefu.knowledge.text import plain_text
from kefu.knowledge.types import ChunkInfo, SearchHit
from kefu.pipeline.context import Citation, TurnContext
from kefu.pipeline.deps import TurnDeps

_SNIPPET_CHARS = 160


def citation(chunk: ChunkInfo) -> Citation:
    """How a chunk is cited to the customer: title › section, the source file, a link to the section."""
    title = f"{chunk.title} › {chunk.section}" if chunk.section else chunk.title
    snippet = " ".join(plain_text(chunk.text).split())
    if len(snippet) > _SNIPPET_CHARS:
        snippet = snippet[: _SNIPPET_CHARS - 1] + "…"
    return Citation(title=title, source=chunk.source, url=KnowledgeService.source_url(chunk), snippet=snippet)


def source_texts(passages: list[SearchHit], deps: TurnDeps) -> list[str]:
    """What an answer may draw on: the passages, plus the shop facts the system prompt gives the model."""
    texts = [f"{p.chunk.title} {p.chunk.section}\n{p.chunk.text}" for p in passages]
    texts.append(f"{deps.shop.name.zh} {deps.shop.name.en} {deps.shop.support_hours or ''}")
    return texts


async def decline(ctx: TurnContext, deps: TurnDeps, knowledge: KnowledgeService, question: str, *, reason: str) -> None:
    """One sentence saying we do not know, the offer of a human, and the question recorded as a gap."""
    assert ctx.session is not None
    count = await knowledge.record_gap(
        question, tenant_id=ctx.session.tenant_id, language=ctx.language, reason=reason, session_id=ctx.session.id
    )
    trace = ctx.trace.setdefault("knowledge", {})
    if isinstance(trace, dict):
        trace.update({"decision": "no_answer", "reason": reason, "gap_count": count, "offer_handoff": True})
    ctx.citations = []
    ctx.finish(deps.prompts.reply("knowledge_no_answer", ctx.language), route="no_answer")
