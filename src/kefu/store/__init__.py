"""Conversation store: SQLAlchemy models, Alembic migrations and the async repository."""

from kefu.store.repository import ConversationStore, MessageRecord, NewReply, SessionRecord, TurnStart

__all__ = ["ConversationStore", "MessageRecord", "NewReply", "SessionRecord", "TurnStart"]
