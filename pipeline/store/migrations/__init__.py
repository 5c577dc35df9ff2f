"""The schema's history as Alembic revisions (`versions/`), applied by `callstream db upgrade` through
`pipeline.store.schema`. Revisions are frozen once released; the ORM models in `store/models.py` are
the current shape, and `alembic check` (a test) fails when the two disagree."""
