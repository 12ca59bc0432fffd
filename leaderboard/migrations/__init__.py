"""Alembic migrations of the leaderboard database (run programmatically by leaderboard.db.upgrade)."""
