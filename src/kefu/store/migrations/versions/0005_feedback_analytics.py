"""feedback and analytics: one thumb per reply, indexes for reports by tenant and time

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Earlier versions stored every vote: keep the newest thumb of each reply before making them unique.
    op.execute(
        "DELETE FROM feedback WHERE message_id IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM feedback newer WHERE newer.message_id = feedback.message_id "
        "AND (newer.created_at > feedback.created_at "
        "OR (newer.created_at = feedback.created_at AND newer.id > feedback.id)))"
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index("uq_feedback_message", ["message_id"], unique=True)
        batch_op.create_index("ix_feedback_tenant_created", ["tenant_id", "created_at"], unique=False)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_tenant_created", ["tenant_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_tenant_created")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_tenant_created")
        batch_op.drop_index("uq_feedback_message")
