"""devices.login_secret_hash: a device that signed in before can prove it

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

The SHA-256 of a secret the server issues at each sign-in (`TokenPair.device_secret`). A
sign-in presenting it for the same user and device is exempt from the per-address login
throttle, so a stranger's wrong guesses cannot keep a known device out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("login_secret_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("login_secret_hash")
