"""`callstream worker`: one Faust worker of the consumer group."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.base import Handler
from pipeline.settings import Settings


def register(sub: Any) -> dict[str, Handler]:
    w = sub.add_parser("worker", help="run a Faust worker")
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                   help="the worker's log level (default info)")
    return {"worker": worker}


def worker(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.ingest.codecs import require_all
    from pipeline.ingest.topics import ensure_topics
    from pipeline.store.db import require_schema
    from pipeline.worker.run import run_worker

    # Migrations are a deploy step (`callstream db upgrade`): a worker needs no DDL rights, only the
    # schema version it was built for.
    require_all()   # one batch in a codec it cannot read would otherwise stop the worker for good
    require_schema(settings)
    ensure_topics(settings)
    run_worker(settings, args.loglevel)
