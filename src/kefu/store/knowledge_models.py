"""Relational schema of the knowledge base: documents, their chunks, the shared version, unanswered questions.

The relational store is the source of truth that every worker agrees on; the search index (in-process or
Milvus) is derived from `kb_chunks` and is rebuilt from it whenever `kb_state.version` moves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kefu.store.models import Base, new_id, utcnow


class KnowledgeDocument(Base):
    """One source document (a policy page, a manual, an FAQ table) as last ingested."""

    __tablename__ = "kb_documents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Stable for (tenant, collection, source): a re-ingested file keeps its id and gets a new version."""
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    collection: Mapped[str] = mapped_column(String(128))
    """A `kefu kb sync DIR` mirrors one collection: documents of the collection missing from DIR are removed."""
    source: Mapped[str] = mapped_column(String(512))
    """Path of the file relative to its collection root (or the uploaded file name)."""
    title: Mapped[str] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(16))
    lang: Mapped[str | None] = mapped_column(String(8), nullable=True)
    category: Mapped[str | None] = mapped_column(String(128), nullable=True)
    product: Mapped[str | None] = mapped_column(String(128), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    display_text: Mapped[str] = mapped_column(Text, default="")
    """The document as Markdown, for the source page citations link to."""
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", "collection", "source", name="uq_kb_documents_source"),)


class KnowledgeChunk(Base):
    """A retrievable piece of a document version, with what the index needs to rebuild itself."""

    __tablename__ = "kb_chunks"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    doc_id: Mapped[str] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default")
    doc_version: Mapped[int] = mapped_column(Integer)
    ordinal: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    """'passage' or 'faq' (a curated question-answer pair)."""
    text: Mapped[str] = mapped_column(Text)
    """What a customer may be shown or the model is given."""
    search_text: Mapped[str] = mapped_column(Text)
    """What is embedded: the text with its title and section path in front."""
    tokens: Mapped[str] = mapped_column(Text)
    """BM25 terms (jieba for Chinese), space-separated, so rebuilding the index needs no tokenizer."""
    lang: Mapped[str | None] = mapped_column(String(8), nullable=True)
    section: Mapped[str] = mapped_column(String(512), default="")
    anchor: Mapped[str] = mapped_column(String(256), default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    """float32 little-endian, L2-normalised, from the embedder named in kb_state."""
    question_vectors: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """FAQ chunks: one float32 row per question variant (question + similar questions)."""


class KnowledgeState(Base):
    """The one shared knowledge version: bumped by every change, checked by every worker on every turn."""

    __tablename__ = "kb_state"

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default="global")
    version: Mapped[int] = mapped_column(Integer, default=0)
    embedder: Mapped[str] = mapped_column(String(256), default="")
    dim: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KnowledgeGap(Base):
    """A customer question the knowledge base could not answer, counted, for operators to fill."""

    __tablename__ = "kb_gaps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default")
    question_key: Mapped[str] = mapped_column(String(64))
    """Hash of the normalised question, so rephrasings that differ only in case or punctuation count together."""
    question: Mapped[str] = mapped_column(Text)
    lang: Mapped[str | None] = mapped_column(String(8), nullable=True)
    reason: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        UniqueConstraint("tenant_id", "question_key", name="uq_kb_gaps_question"),
        Index("ix_kb_gaps_tenant_count", "tenant_id", "count"),
    )
