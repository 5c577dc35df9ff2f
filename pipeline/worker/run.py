"""Running a worker process: Faust's worker with a bounded stop, and the process's exit code.

A worker exits 0 when it was asked to stop, and non-zero when the app crashed (its agent died:
worker/app.py's crashing supervisor), so its supervisor restarts it. It exits with os._exit: a decode
or an S3 read blocked in a thread must not keep a stopping worker alive, and everything worth keeping
is committed by then (unfinished chunks are redelivered).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import NoReturn

import faust

from pipeline.settings import Settings
from pipeline.worker.app import create_app

log = logging.getLogger("callstream.worker")


class BoundedStopWorker(faust.Worker):
    """Leaves the group on SIGTERM like any Faust worker, but never takes longer than the grace period."""

    grace_s = 8.0

    def _on_sigterm(self) -> None:
        def hard_exit() -> None:
            log.warning("still stopping after %.0fs; exiting now (unfinished chunks are redelivered)", self.grace_s)
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(self.grace_s, hard_exit)
        timer.daemon = True
        timer.start()
        super()._on_sigterm()


def run_worker(settings: Settings, loglevel: str = "info") -> NoReturn:
    worker = BoundedStopWorker(create_app(settings), loglevel=loglevel.upper())
    worker.grace_s = settings.stop_grace_s
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:   # mode exits 1 when the app crashed (a dead agent), 0 when it was stopped
        code = exc.code if isinstance(exc.code, int) else 1
    logging.shutdown()
    os._exit(code)
