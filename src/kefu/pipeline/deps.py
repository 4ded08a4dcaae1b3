"""The services a turn needs, built once at start-up and passed to every stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kefu.config import Settings
from kefu.llm.base import LLMBackend
from kefu.llm.types import LLMRole
from kefu.prompts import PromptLibrary
from kefu.shop import ShopProfile
from kefu.store import ConversationStore

if TYPE_CHECKING:
    from kefu.cache import AnswerCache
    from kefu.dialogue.agent import ToolAgent
    from kefu.dialogue.service import Dialogue
    from kefu.handoff.service import HandoffService
    from kefu.knowledge.service import KnowledgeService
    from kefu.safety.service import Safety
    from kefu.store.audit_log import AuditLog
    from kefu.understanding.service import Understanding


@dataclass(frozen=True, slots=True)
class TurnDeps:
    """Typed dependencies of the pipeline; tests build one with fakes."""

    settings: Settings
    store: ConversationStore
    llms: dict[LLMRole, LLMBackend]
    prompts: PromptLibrary
    shop: ShopProfile
    safety: Safety | None = None
    """PII redaction and the input/output guards; None runs turns unguarded (some unit tests)."""
    audit_log: AuditLog | None = None
    """Where model input/output is audited (redacted), off the hot path."""
    knowledge: KnowledgeService | None = None
    """The knowledge base (retrieval, curated answers, gaps); None runs turns without one."""
    understanding: Understanding | None = None
    """Intent, entities, emotion and routing; None runs turns without understanding."""

    dialogue: Dialogue | None = None
    """Flows, their state and the backend actions; None runs turns without flows."""
    handoff: HandoffService | None = None
    """Tickets and live relay to human agents; None answers handoffs with a fixed reply only."""
    agent: ToolAgent | None = None
    """The LLM with the read actions each tool_agent intent allows; None leaves those turns to knowledge."""
    answer_cache: AnswerCache | None = None
    """Non-personal knowledge answers served again (exact repeats, paraphrases); None answers every turn afresh."""

    def llm(self, role: LLMRole) -> LLMBackend:
        return self.llms[role]
