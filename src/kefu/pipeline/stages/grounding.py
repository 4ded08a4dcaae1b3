"""The grounding check on a knowledge answer, before it leaves: cited, backed by its passages, or replaced.

An answer whose numbers or claims are not in its passages is replaced by a quote of the best passage (when
retrieval was confident) or by "I don't know — shall I get a human?" with the question recorded as a gap.
"""

from __future__ import annotations

from kefu.knowledge.grounding import GroundingChecker, Sources, strip_markers
from kefu.knowledge.text import complete_prefix, plain_text, split_sentences
from kefu.knowledge.types import SearchHit
from kefu.pipeline.context import TurnContext, TurnEvents
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.stages.knowledge_replies import citation, decline, source_texts

NO_ANSWER = "NO_ANSWER"
"""What the system prompt tells the model to reply when its passages do not answer the question."""
_QUOTE_SENTENCES = 2
_QUOTE_CHARS = 240


class SentenceGate:
    """Stands between the model's stream and the customer: a sentence is shown only once it passed the check."""

    streaming = True

    def __init__(self, inner: TurnEvents, checker: GroundingChecker, sources: Sources, *, keep_markers: bool) -> None:
        self.inner = inner
        self.checker = checker
        self.sources = sources
        self.keep_markers = keep_markers
        self.pending = ""
        self.shown = ""
        self.blocked = False
        """A sentence failed: nothing more is shown; the grounding stage decides the final reply."""

    async def started(self, ctx: TurnContext) -> None:
        await self.inner.started(ctx)

    async def delta(self, text: str) -> None:
        self.pending += text
        if not self.blocked:
            end = complete_prefix(self.pending)
            if end:
                ready, self.pending = self.pending[:end], self.pending[end:]
                await self._release(ready)

    async def replace(self, text: str) -> None:
        self.blocked = True
        await self.inner.replace(text)

    async def flush(self) -> None:
        """The whole answer passed: show what is still held back."""
        if not self.blocked and self.pending.strip():
            await self._release(self.pending)
        self.pending = ""

    async def _release(self, text: str) -> None:
        for sentence in split_sentences(text):
            if NO_ANSWER in sentence or not self.checker.check_sentence(sentence, self.sources).supported:
                self.blocked = True
                return
            shown = sentence if self.keep_markers else strip_markers(sentence)
            if not shown:
                continue
            glue = " " if self.shown and not _ends_cjk(self.shown) else ""
            self.shown += glue + shown
            await self.inner.delta(glue + shown)


def _ends_cjk(text: str) -> bool:
    last = text.rstrip()[-1:]
    return bool(last) and ("\u3000" <= last <= "\u9fff" or last in "。！？；，）」』”")


class CheckGrounding:
    """Accepts a grounded answer with its citations, or replaces it by a quote or an honest decline."""

    name = "grounding"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        gate = ctx.events if isinstance(ctx.events, SentenceGate) else None
        try:
            await self._check(ctx, deps, gate)
        finally:
            if gate is not None:
                ctx.events = gate.inner

    async def _check(self, ctx: TurnContext, deps: TurnDeps, gate: SentenceGate | None) -> None:
        knowledge, turn = deps.knowledge, ctx.knowledge
        if knowledge is None or turn is None or ctx.route != "knowledge" or ctx.done:
            return
        settings = knowledge.settings
        checker = GroundingChecker(knowledge.tokenizer, min_overlap=settings.grounding_overlap)
        answer = ctx.reply.strip()
        passages = [f"{p.chunk.title} {p.chunk.section}\n{p.chunk.text}" for p in turn.passages]
        extra = source_texts([], deps)
        trace = ctx.trace.setdefault("knowledge", {})
        assert isinstance(trace, dict)
        if not answer or NO_ANSWER in answer:
            trace["answer"] = {"supported": False, "reasons": ["the model found no answer in the passages"]}
            reason = "model_declined"
        else:
            verdict = checker.check(answer, passages, extra)
            trace["answer"] = verdict.as_trace()
            if verdict.supported:
                cited = [turn.passages[n - 1] for n in verdict.cited] or _supporting(checker, answer, turn.passages)
                ctx.citations = [citation(hit.chunk) for hit in _unique(cited)]
                ctx.reply = answer if settings.show_citation_markers else strip_markers(answer)
                ctx.trace["grounding"] = {"supported": True}
                if gate is not None:
                    await gate.flush()
                return
            reason = "ungrounded"
        if turn.passages and reason == "ungrounded" and knowledge.quotable(turn.best_dense, turn.lexical):
            best = turn.passages[0]
            ctx.reply = deps.prompts.reply("knowledge_quote", ctx.language).format(
                title=best.chunk.title, quote=quote(checker, best, turn.query)
            )
            ctx.citations = [citation(best.chunk)]
            ctx.route = "knowledge_quote"
            trace["decision"] = "quote"
        else:
            await decline(ctx, deps, knowledge, turn.query, reason=reason)
        ctx.trace["grounding"] = {"supported": True, "answer_supported": False, "fallback": trace.get("decision")}


def _supporting(checker: GroundingChecker, answer: str, passages: list[SearchHit]) -> list[SearchHit]:
    """Without markers, cite the passages the answer draws its words from (at least the best one)."""
    words = set(checker.tokenizer.terms(strip_markers(answer)))
    scored = [(len(words & set(checker.tokenizer.terms(p.chunk.text))), i) for i, p in enumerate(passages)]
    best = max((s for s, _ in scored), default=0)
    chosen = [passages[i] for s, i in scored if s and s >= best / 2]
    return chosen or passages[:1]


def _unique(hits: list[SearchHit]) -> list[SearchHit]:
    seen: set[str] = set()
    out = []
    for hit in hits:
        if hit.chunk.id not in seen:
            seen.add(hit.chunk.id)
            out.append(hit)
    return out


def quote(checker: GroundingChecker, hit: SearchHit, question: str) -> str:
    """The sentences of a passage that share most words with the question, in their order, kept short."""
    text = hit.chunk.text
    if hit.chunk.kind == "faq" and "\nA: " in text:
        text = text.split("\nA: ", 1)[1]
    sentences = split_sentences(plain_text(text))
    wanted = set(checker.tokenizer.terms(question))
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(wanted & set(checker.tokenizer.terms(sentences[i]))), i))
    chosen = sorted(ranked[:_QUOTE_SENTENCES])
    out = ""
    for i in chosen:
        piece = sentences[i]
        glue = " " if out and not _ends_cjk(out) else ""
        if out and len(out) + len(piece) > _QUOTE_CHARS:
            break
        out += glue + piece
    return out[: _QUOTE_CHARS * 2]
