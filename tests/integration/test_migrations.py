"""Migrations are frozen DDL; a database built by them must match the ORM models the code writes with."""

import pytest
from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql

from pipeline.store.db import sync_engine
from pipeline.store.models import Base

pytestmark = pytest.mark.stack


def _type(t) -> str:
    return t.compile(dialect=postgresql.dialect()).replace("DOUBLE PRECISION", "FLOAT")


def test_the_migrated_database_matches_the_models(stack):
    engine = sync_engine(stack.settings)   # built by ensure_schema, i.e. by the migrations alone
    try:
        db = inspect(engine)
        for table in Base.metadata.sorted_tables:
            columns = {c["name"]: c for c in db.get_columns(table.name)}
            assert set(columns) == {c.name for c in table.columns}, table.name
            for col in table.columns:
                found = columns[col.name]
                assert _type(found["type"]) == _type(col.type), (table.name, col.name)
                assert found["nullable"] == col.nullable, (table.name, col.name)
            pk = db.get_pk_constraint(table.name)["constrained_columns"]
            assert pk == [c.name for c in table.primary_key.columns], table.name
            uniques = {u["name"]: u["column_names"] for u in db.get_unique_constraints(table.name)}
            for u in (c for c in table.constraints if c.__class__.__name__ == "UniqueConstraint"):
                assert uniques.get(u.name) == [c.name for c in u.columns], (table.name, u.name)
            indexes = {i["name"]: i["column_names"] for i in db.get_indexes(table.name)}
            for ix in table.indexes:
                assert indexes.get(ix.name) == [c.name for c in ix.columns], (table.name, ix.name)
    finally:
        engine.dispose()
