"""The per-turn context every stage reads and writes, and the sink for streamed output."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kefu.language import Language
from kefu.llm.types import Message, Usage
from kefu.store import MessageRecord, SessionRecord

if TYPE_CHECKING:
    from kefu.dialogue.state import SessionDialogue
    from kefu.knowledge.types import KnowledgeTurn
    from kefu.prompts import PromptLibrary
    from kefu.release.turn import ArmTurn
    from kefu.safety.pii import PiiVault
    from kefu.understanding.types import UnderstandingResult


@dataclass(frozen=True, slots=True)
class TurnInput:
    """One customer message as a channel delivered it."""

    user_id: str
    channel: str
    text: str
    session_id: str | None = None
    client_message_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tenant_id: str = "default"


@dataclass(frozen=True, slots=True)
class Citation:
    """A source a reply is grounded in."""

    title: str
    source: str
    url: str | None = None
    snippet: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "source": self.source, "url": self.url, "snippet": self.snippet}


class TurnEvents(Protocol):
    """Where a turn reports progress while it runs (SSE, WebSocket); the no-op sink serves plain HTTP."""

    @property
    def streaming(self) -> bool: ...

    async def started(self, ctx: TurnContext) -> None: ...

    async def delta(self, text: str) -> None: ...

    async def replace(self, text: str) -> None:
        """The text streamed so far is withdrawn: `text` (the final reply) is what the customer should see."""
        ...


class SilentEvents:
    """Discards progress: the caller only wants the finished turn."""

    streaming = False

    async def started(self, ctx: TurnContext) -> None:
        return None

    async def delta(self, text: str) -> None:
        return None

    async def replace(self, text: str) -> None:
        return None


@dataclass(slots=True)
class TurnContext:
    """Everything known about one turn; stages fill it in order and may end the turn early."""

    input: TurnInput
    events: TurnEvents
    started_at: float = field(default_factory=time.perf_counter)
    session: SessionRecord | None = None
    new_session: bool = False
    """The session was created by this turn's message, so there is no history to load."""
    customer_message: MessageRecord | None = None
    language: Language = "en"
    history: list[Message] = field(default_factory=list)
    prompt: list[Message] = field(default_factory=list)
    reply: str = ""
    citations: list[Citation] = field(default_factory=list)
    knowledge: KnowledgeTurn | None = None
    """Passages retrieved for this turn and the question they answer; the prompt and the grounding check use them."""
    intent: str | None = None
    route: str | None = None
    handoff: bool = False
    understanding: UnderstandingResult | None = None
    """Intent, entities, emotion and the routing decision, filled by the understand stage."""
    model: str | None = None
    usage: Usage | None = None
    error_code: str | None = None
    error: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    trace: dict[str, Any] = field(default_factory=dict)
    """What stages want on record for operators (e.g. the router's decision and its reasons)."""
    done: bool = False
    """Set by a stage that has produced the final reply (cache hit, guard, curated answer, handoff)."""
    stored_reply: MessageRecord | None = None
    duplicate: bool = False
    """The customer message was already processed (a resend); its stored reply is returned as is."""
    handoff_reason: str | None = None
    """Set by a stage that decides a person should take over; the handoff stage opens the ticket."""
    silent: bool = False
    """A human agent owns the session: the customer's message is stored and relayed, the bot says nothing."""
    resume_prompt: str | None = None
    """After answering a digression, the open flow's pending question, added to the end of the reply."""
    earlier: list[MessageRecord] | None = None
    """The session's last messages before this one (`earlier_messages`), read once per turn."""
    dialogue: SessionDialogue | None = None
    """The session's flow state, loaded by the flow stage (or already by the answer cache's lookup)."""
    knowledge_followed: bool = False
    """The knowledge base has been brought to the shared version once this turn (`follow_knowledge`)."""
    knowledge_version: int | None = None
    """The shared knowledge version, as the intake read it with the customer's message."""
    pii: PiiVault | None = None
    """The session's PII placeholders, loaded by the input guard when the message carried personal data.
    From the input guard on, `input.text` is the redacted text."""
    release: ArmTurn | None = None
    """The experiment and arm serving this turn, when a gray release runs (docs/release.md)."""
    prompts_fingerprint: tuple[PromptLibrary, str] | None = None
    """The prompt templates' fingerprint as this turn's answer cache first read it (`AnswerNamespaces`): the turn's
    lookups and its store share one namespace, and the templates are looked at once a turn, not at each of them."""

    def finish(self, reply: str, *, route: str) -> None:
        self.reply = reply
        self.route = route
        self.done = True

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_at) * 1000
