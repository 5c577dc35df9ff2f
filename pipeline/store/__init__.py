"""PostgreSQL: the ORM schema, its migrations and views, and the idempotent writers."""
