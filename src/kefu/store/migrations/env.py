"""Alembic environment: kefu runs migrations in-process over a connection it passes in."""

from __future__ import annotations

from alembic import context

from kefu.store import (
    auth_models,  # noqa: F401  (registers the access-control tables on Base.metadata)
    dialogue_models,  # noqa: F401  (registers the dialogue tables on Base.metadata)
    knowledge_models,  # noqa: F401  (registers the knowledge tables on Base.metadata)
    release_models,  # noqa: F401  (registers the release table on Base.metadata)
)
from kefu.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("kefu migrations run through kefu.store.database.migrate(), which supplies a connection")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
