"""`callstream worker`: one Faust worker of the consumer group."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pipeline.cli.base import Handler
from pipeline.settings import Settings


def register(sub: Any) -> dict[str, Handler]:
    w = sub.add_parser("worker", help="run a Faust worker")
    w.add_argument("--loglevel", default="info")
    return {"worker": worker}


def worker(settings: Settings, args: argparse.Namespace) -> int:
    import os
    import threading

    import faust

    from pipeline.ingest.topics import ensure_topics
    from pipeline.store.db import require_schema
    from pipeline.worker.app import EXIT_CODE, create_app

    # Migrations are a deploy step (`callstream db upgrade`): a worker needs no DDL rights, only the
    # schema version it was built for.
    require_schema(settings)
    ensure_topics(settings)
    app = create_app(settings)

    class Worker(faust.Worker):
        """Leaves the group on SIGTERM like any Faust worker, but never takes longer than the grace
        period: a decode or an S3 read blocked in a thread must not keep a stopping worker alive."""

        def _on_sigterm(self) -> None:
            def hard_exit() -> None:
                logging.getLogger("callstream.worker").warning(
                    "still stopping after %.0fs; exiting now (unfinished chunks are redelivered)",
                    settings.stop_grace_s)
                logging.shutdown()
                os._exit(EXIT_CODE["code"])

            timer = threading.Timer(settings.stop_grace_s, hard_exit)
            timer.daemon = True
            timer.start()
            super()._on_sigterm()

    worker = Worker(app, loglevel=args.loglevel.upper())
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    logging.shutdown()
    # Threads still blocked in I/O would hold interpreter exit; everything worth keeping is committed.
    os._exit(EXIT_CODE["code"])
