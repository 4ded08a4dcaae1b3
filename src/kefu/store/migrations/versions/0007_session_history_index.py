"""messages: an index for a session's newest messages

Every continued turn reads the session's last messages (`ConversationStore.list_messages`). With only the
single-column indexes, SQLite's planner chose `ix_messages_tenant_id` for `session_id = ? AND tenant_id = ?`
and sorted: a scan of every message of the tenant, growing with the whole store. This index serves the
filter and the order, newest first, without a sort.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_session_created", ["session_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_session_created")
