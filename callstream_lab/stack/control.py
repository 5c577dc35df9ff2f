"""`callstream up` / `down`: start what settings do not point elsewhere, in dependency order."""

from __future__ import annotations

import time
from collections.abc import Callable

from callstream_lab.stack import broker, objectstore, postgres, procs, triton
from pipeline.settings import Settings


def up(settings: Settings, log: Callable[[str], None] = print) -> None:
    steps = []
    if not settings.s3_endpoint:
        steps.append(("object store (SeaweedFS S3)", objectstore.start))
    if not settings.kafka_bootstrap:
        steps.append(("Kafka API (tansu)", broker.start))
    if not settings.database_url:
        steps.append(("Postgres (embedded)", postgres.start))
    if not settings.triton_url:
        steps.append(("Triton Inference Server", triton.start))
    for what, start in steps:
        t = time.time()
        log(f"  starting {what} ...")
        start(settings)
        log(f"  {what} ready in {time.time() - t:.1f}s")


def down(settings: Settings, log: Callable[[str], None] = print) -> None:
    for what, stop in (("Triton", triton.stop), ("tansu", broker.stop),
                       ("Postgres", postgres.stop), ("SeaweedFS", objectstore.stop)):
        log(f"  stopped {what}" if stop(settings) else f"  {what} was not running")


def status(settings: Settings) -> dict[str, int | None]:
    return {name: procs.running_pid(settings.state_dir, name)
            for name in (objectstore.NAME, broker.NAME, postgres.NAME, triton.NAME)}


def status_lines(settings: Settings) -> list[str]:
    """`callstream status`'s section on the embedded services (entry point `callstream.status`)."""
    return ["services (embedded stack)"] + [f"  {name:<14} {'running, pid ' + str(pid) if pid else 'stopped'}"
                                            for name, pid in status(settings).items()]
