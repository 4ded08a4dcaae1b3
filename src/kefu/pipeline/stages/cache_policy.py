"""What the answer cache may keep and serve: only self-contained knowledge answers that used nobody's data.

A turn is cached only when every rule here lets it through, and the rules err on the side of not caching:
a missed hit costs one model call, a wrongly shared answer would show one customer's business to another.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from kefu.cache.keys import Namespace, digest
from kefu.knowledge.rewrite import looks_like_follow_up
from kefu.knowledge.tokenizer import Tokenizer
from kefu.knowledge.types import SearchHit
from kefu.language import detect_language, language_mix
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.safety.pii import PLACEHOLDER

CACHEABLE_ROUTES = ("faq", "knowledge")
"""A curated answer, or a model answer grounded in the knowledge base that passed its check."""
PERSONAL_ENTITIES = frozenset({"order_number", "tracking_number", "after_sale_id", "phone", "email", "address", "date"})
"""Entities that tie an answer to one customer (their order, parcel, contact) or to today (a relative date)."""
_SELF_CONTAINED = "not_self_contained"
_PERSONAL = "personal"
_NOT_AN_ANSWER = "not_an_answer"
_FLAGGED = "flagged"
_CODE = re.compile(r"\d{6,}")
"""A long number (an order, parcel or account number, whatever its format): the exact lookup runs before entities
are extracted, so this keeps such messages out of the cache whatever their case or spelling."""


def semantic_intent(ctx: TurnContext) -> str | None:
    """The intent a paraphrase must share to be served the same answer: the turn's intent, or, when understanding
    could not tell some intents apart and kept its best guess (`IntentDecision.alike`), all of them together, so
    that the guess never mixes with answers to a confidently recognised intent."""
    decision = ctx.understanding.intent if ctx.understanding is not None else None
    if decision is not None and decision.alike and ctx.intent == decision.intent:
        return "|".join(sorted(decision.alike))
    return ctx.intent


def _knowledge_trace(ctx: TurnContext) -> dict[str, Any]:
    trace = ctx.trace.get("knowledge")
    return trace if isinstance(trace, dict) else {}


def text_blocker(ctx: TurnContext) -> str | None:
    """Why the customer's message itself rules the cache out, before anything else is known; None if it does not.

    Personal data (redacted by the input guard), a message the guard found suspicious, and a message that leans
    on the conversation (a follow-up, or only codes and numbers whose language comes from earlier messages).
    """
    return _personal_message(ctx) or _leaning_message(ctx)


def question_blocker(ctx: TurnContext) -> str | None:
    """Why the question, as understanding and retrieval saw it, rules the cache out; None if nothing does."""
    if blocked := _personal_message(ctx):
        return blocked
    entities = ctx.understanding.entities if ctx.understanding is not None else ()
    if any(e.type in PERSONAL_ENTITIES for e in entities):
        return _PERSONAL
    if blocked := _leaning_message(ctx):
        return blocked
    if any(e.source == "context" for e in entities):
        return _SELF_CONTAINED  # "the blue one": resolved from earlier messages
    knowledge = _knowledge_trace(ctx)
    if knowledge.get("rewrite", "none") != "none" or knowledge.get("query", ctx.input.text) != ctx.input.text:
        return _SELF_CONTAINED  # answered as rewritten from the conversation
    if detect_language(ctx.input.text) != ctx.language:
        return _SELF_CONTAINED  # the reply language came from the conversation, not from the question
    return None


def _personal_message(ctx: TurnContext) -> str | None:
    if ctx.pii is not None or "pii" in ctx.trace or _CODE.search(ctx.input.text):
        return _PERSONAL
    if "input_guard" in ctx.trace:
        return _FLAGGED  # suspicious (a possible injection): answered with care, never from or into a cache
    return None


def _leaning_message(ctx: TurnContext) -> str | None:
    text = ctx.input.text
    if language_mix(PLACEHOLDER.sub(" ", text)) is None or looks_like_follow_up(text):
        return _SELF_CONTAINED
    return None


def store_blocker(ctx: TurnContext, deps: TurnDeps) -> str | None:
    """Why this finished turn must not be cached (an outcome label for the metrics); None when it may be."""
    if ctx.route not in CACHEABLE_ROUTES or ctx.error_code is not None or not ctx.reply.strip():
        return _NOT_AN_ANSWER
    if ctx.silent or ctx.handoff or ctx.handoff_reason is not None or "output_guard" in ctx.trace:
        return _NOT_AN_ANSWER
    if ctx.route == "knowledge" and ctx.trace.get("grounding") != {"supported": True}:
        return _NOT_AN_ANSWER  # replaced, quoted or declined by the grounding check
    if ctx.release is not None and ctx.release.arm_error is not None:
        return _NOT_AN_ANSWER  # a failing canary's call was answered by control: not this arm's answer to keep
    if ctx.resume_prompt:
        return _PERSONAL  # the reply carries the customer's open task
    if blocked := question_blocker(ctx):
        return blocked
    state = ctx.dialogue
    if state is not None and (state.identity is not None or state.active is not None):
        return _PERSONAL  # a verified customer, or a task under way: never cached, whatever was asked
    if "flow" in ctx.trace or _agent_ran(ctx):
        return _PERSONAL
    safety = deps.safety
    if PLACEHOLDER.search(ctx.reply) or (safety is not None and safety.detector.find(ctx.reply)):
        return _PERSONAL
    return None


def _agent_ran(ctx: TurnContext) -> bool:
    agent = ctx.trace.get("agent")
    return isinstance(agent, dict) and "skipped" not in agent


def answers_alike(
    cached_terms: Collection[str],
    cached_passages: Sequence[str],
    asked_terms: Collection[str],
    asked_passages: Sequence[SearchHit],
    tokenizer: Tokenizer,
) -> bool:
    """Whether a cached model answer answers the asked question too, beyond their similar embeddings.

    Both must rest on the same knowledge: the best passage of each is among the other's passages. And both must ask
    about the same things in it: the words of each question that those shared passages contain are the same. So
    "退款多久到账？用的微信" does not get the answer cached for "…用的银联卡", nor "the 3 month plan" the one for
    "the 12 month plan": the passages are the same, the words the answer turns on are not (`kefu eval cache`).
    """
    asked_ids = [p.chunk.id for p in asked_passages]
    if not cached_passages or not asked_ids:
        return False
    if cached_passages[0] not in asked_ids or asked_ids[0] not in cached_passages:
        return False
    shared = " ".join(
        f"{p.chunk.title} {p.chunk.section} {p.chunk.text}" for p in asked_passages if p.chunk.id in cached_passages
    )
    vocabulary = set(tokenizer.terms(shared))
    return vocabulary.intersection(cached_terms) == vocabulary.intersection(asked_terms)


class AnswerNamespaces:
    """The namespace of a turn's answers, from its dependencies: knowledge, prompts, chat model and settings.

    The settings part is computed once per set of dependencies (a gray-release arm has its own), the knowledge
    part follows its source on every call, the prompts' on every turn.
    """

    def __init__(self) -> None:
        self._static: dict[tuple[int, ...], tuple[tuple[object, ...], str]] = {}

    def __call__(self, deps: TurnDeps, knowledge_version: int, ctx: TurnContext | None = None) -> Namespace:
        """`ctx`: the turn asking, whose first reading of the prompts is kept for its later questions."""
        assert deps.knowledge is not None
        chat = deps.llms.get("chat")
        prompts = deps.prompts
        seen = ctx.prompts_fingerprint if ctx is not None else None
        if seen is not None and seen[0] is prompts:
            fingerprint = seen[1]
        else:
            fingerprint = prompts.fingerprint()
            if ctx is not None:
                ctx.prompts_fingerprint = prompts, fingerprint
        return Namespace.of(
            knowledge_version,
            (
                deps.knowledge.fingerprint,
                fingerprint,
                chat.model if chat is not None else "",
                self._settings_part(deps),
            ),
        )

    def _settings_part(self, deps: TurnDeps) -> str:
        sources: tuple[object, ...] = (deps.settings, deps.shop, deps.understanding, deps.knowledge)
        key = tuple(id(s) for s in sources)
        found = self._static.get(key)
        if found is None:
            if len(self._static) >= 16:
                self._static.clear()
            # The objects are kept with their fingerprint, so their ids cannot be reused while it is remembered.
            found = self._static[key] = sources, _settings_fingerprint(deps)
        return found[1]


def _settings_fingerprint(deps: TurnDeps) -> str:
    """The settings and data that shape an answer, without paths or secrets (they differ between replicas)."""
    settings = deps.settings
    parts: list[str] = [
        settings.knowledge.model_dump_json(exclude={"source_dir", "milvus_uri", "milvus_token", "embedding"}),
        settings.knowledge.embedding.model_dump_json(exclude={"api_key"}),
        settings.understanding.model_dump_json(exclude={"cache_dir", "intents_file", "emotion_file", "openers_file"}),
        settings.chat.model_dump_json(),
        deps.shop.model_dump_json(),
    ]
    if deps.knowledge is not None:
        parts.append(deps.knowledge.embedder.name)
    catalogue = deps.understanding.catalogue if deps.understanding is not None else None
    parts.append(catalogue.fingerprint() if catalogue is not None else "")
    return digest(*parts)
