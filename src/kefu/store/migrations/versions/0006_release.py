"""release: experiment state shared by every worker, and the arm on sessions and replies

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_experiments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("configured_share", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("release_experiment", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("release_arm", sa.String(length=16), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("experiment", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("arm", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("arm_error", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_messages_experiment_arm", ["experiment", "arm", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_experiment_arm")
        batch_op.drop_column("arm_error")
        batch_op.drop_column("arm")
        batch_op.drop_column("experiment")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("release_arm")
        batch_op.drop_column("release_experiment")
    op.drop_table("release_experiments")
