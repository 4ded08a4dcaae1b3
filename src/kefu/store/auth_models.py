"""Relational schema of access control: operator accounts, channel API keys, operator sensitive words."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kefu.store.models import Base, new_id, utcnow


class Operator(Base):
    """A person who runs the shop's customer service: admin, agent or viewer, in one tenant."""

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    """argon2id (argon2-cffi); never the password."""
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    """Raised on password, role or status changes: refresh tokens minted before stop working."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A channel's key for the chat APIs; only its SHA-256 is stored (keys are long random strings)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    channel: Mapped[str] = mapped_column(String(32))
    """The channel the key may speak for, or '*' for any."""
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    """The key's public start (kefu_xxxxxxxx), to recognise it in lists without storing the key."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SensitiveWord(Base):
    """A word an operator added to the tenant's sensitive-word lexicon."""

    __tablename__ = "sensitive_words"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    word: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", "word", name="uq_sensitive_words_tenant_word"),)
