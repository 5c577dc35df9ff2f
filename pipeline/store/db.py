"""Engines (psycopg 3 under SQLAlchemy) and schema setup."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.settings import Settings
from pipeline.store.migrations import migrate


def sync_engine(settings: Settings) -> Engine:
    return create_engine(settings.sqlalchemy_url, pool_pre_ping=True)


def async_engine(settings: Settings, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(settings.sqlalchemy_url, pool_size=pool_size, max_overflow=pool_size,
                               pool_pre_ping=True)


def ensure_schema(settings: Settings) -> list[int]:
    engine = sync_engine(settings)
    try:
        with engine.begin() as conn:
            return migrate(conn)
    finally:
        engine.dispose()
