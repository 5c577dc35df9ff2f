"""`callstream up` / `down`: start what settings do not point elsewhere, in dependency order."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

from callstream_lab.stack import apache_kafka, broker, objectstore, postgres, procs, triton
from pipeline.settings import Settings


def kafka_service(settings: Settings) -> ModuleType:
    """The broker `up` starts: tansu (pip only) or Apache Kafka (`CALLSTREAM_EMBEDDED_BROKER=kafka`)."""
    return apache_kafka if settings.embedded_broker == "kafka" else broker


def up(settings: Settings, log: Callable[[str], None] = print) -> None:
    steps = []
    if not settings.s3_endpoint:
        steps.append(("object store (SeaweedFS S3)", objectstore.start))
    if not settings.kafka_bootstrap:
        if settings.embedded_broker == "kafka":
            steps.append(("Apache Kafka (KRaft)", apache_kafka.start))
        else:
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
    """Stop the services side by side: only tansu must go before SeaweedFS (it flushes its log to it).
    SeaweedFS's filer waits 15 s for its S3 gateway's subscription before it stops (fixed in weed), so
    that is how long `down` takes; in sequence it was the sum."""
    Stop = tuple[str, Callable[[Settings], bool]]
    chains: list[list[Stop]] = [[("Triton", triton.stop)], [("tansu", broker.stop), ("SeaweedFS", objectstore.stop)],
              [("Postgres", postgres.stop)], [("Apache Kafka", apache_kafka.stop)]]

    def run(chain: list[Stop]) -> None:
        for what, stop in chain:
            t = time.time()
            log(f"  stopped {what} in {time.time() - t:.1f}s" if stop(settings) else f"  {what} was not running")

    with ThreadPoolExecutor(len(chains)) as pool:
        for done in [pool.submit(run, chain) for chain in chains]:
            done.result()


def status(settings: Settings) -> dict[str, int | None]:
    return {name: procs.running_pid(settings.state_dir, name)
            for name in (objectstore.NAME, broker.NAME, apache_kafka.NAME, postgres.NAME, triton.NAME)}


def status_lines(settings: Settings) -> list[str]:
    """`callstream status`'s section on the embedded services (entry point `callstream.status`)."""
    return ["services (embedded stack)"] + [f"  {name:<14} {'running, pid ' + str(pid) if pid else 'stopped'}"
                                            for name, pid in status(settings).items()]
