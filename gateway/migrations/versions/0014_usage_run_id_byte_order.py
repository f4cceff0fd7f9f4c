"""Usage records sort by run id in byte order on PostgreSQL, whatever the database's
collation: `usage_records.run_id` gets `COLLATE "C"`.

The billing export streams records "in run-id order" with a keyset cursor. Run ids are
time-ordered ASCII (`run_` + base62 digits in `0-9A-Za-z` order); under a linguistic collation
(`en_US.UTF-8`, the default of the official PostgreSQL image and many managed clusters) the
export came out in another order than the ids' own, and than on SQLite. The cursor stayed
consistent (nothing lost or repeated); the order did not. The indexes on the column are
rebuilt with the new collation (no table rewrite: the type is unchanged). SQLite compares
bytes already: nothing to do there.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 01:25:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE usage_records ALTER COLUMN run_id TYPE VARCHAR(40) COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            'ALTER TABLE usage_records ALTER COLUMN run_id TYPE VARCHAR(40) COLLATE "default"'
        )
