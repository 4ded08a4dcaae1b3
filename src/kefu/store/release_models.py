"""Relational schema of gray releases: each experiment's live state, shared by every worker and replica."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kefu.store.models import Base, utcnow


class ReleaseExperimentRow(Base):
    """Where one experiment stands: its state, the canary's share, and who changed it last and why."""

    __tablename__ = "release_experiments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    """'running', 'paused', 'rolled_back' or 'promoted' (docs/release.md)."""
    share: Mapped[float] = mapped_column(Float)
    """Percent of new sessions assigned to the canary while running."""
    configured_share: Mapped[float] = mapped_column(Float)
    """The share in the release file when the row was last set from it; a changed file re-launches the experiment."""
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped by every change; workers reload their copy when it moves."""
