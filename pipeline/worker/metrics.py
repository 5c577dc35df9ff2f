"""Prometheus metrics of one worker (README §Operating, docs/OPERATIONS.md).

Each worker serves its own registry on CALLSTREAM_METRICS_PORT; Prometheus scrapes every replica and
sums. Names follow Prometheus conventions: `_total` counters, `_seconds` histograms, base units.
A worker whose port is taken keeps working without metrics (it says so): operations tooling must
never stop the pipeline.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("callstream.worker")

# Stages take milliseconds (db) to tens of seconds (a long chunk's decode); publication to commit
# includes the recorder's chunk length and any backlog.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300, 600)
METRICS_PORTS = 16   # workers on one host take the first free of this many ports from CALLSTREAM_METRICS_PORT


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.chunks = Counter("callstream_chunks", "Chunks settled, by outcome (done, failed, refused) and "
                              "dead-letter reason", ["outcome", "reason"], registry=r)
        self.segments = Counter("callstream_segments_written", "Segment rows (participant x grid cell) "
                                "written or rebuilt", registry=r)
        self.stage = Histogram("callstream_stage_seconds", "Time a chunk spent in each stage", ["stage"],
                               buckets=STAGE_BUCKETS, registry=r)
        self.publish_to_commit = Histogram("callstream_publish_to_commit_seconds", "From the recorder's "
                                           "published-at-ms to the chunk's rows committed", buckets=LATENCY_BUCKETS,
                                           registry=r)
        self.in_flight = Gauge("callstream_chunks_in_flight", "Chunks being processed now", registry=r)
        self.retries = Counter("callstream_retries", "Transient faults retried, by the dependency waited on",
                               ["dependency"], registry=r)
        self.dead_letters = Counter("callstream_dlq_published", "Dead letters published, by reason", ["reason"],
                                    registry=r)
        self.lag = Gauge("callstream_consumer_lag", "Messages of an assigned partition not yet settled by this "
                         "worker (high watermark minus the next unsettled offset)", ["topic", "partition"], registry=r)
        self.unreadable_fetches = Counter("callstream_unreadable_fetches", "Fetches of a record batch the consumer "
                                          "could not read (each try; the offsets given up on are dead letters with "
                                          "reason unreadable_batch), by partition", ["topic", "partition"],
                                          registry=r)
        self.alerts = Counter("callstream_alerts_published", "Live alerts published, by rule", ["rule"], registry=r)
        self.shadow_errors = Counter("callstream_shadow_errors", "Batches the shadow model failed (no shadow rows for "
                                     "their chunk; the primary's rows are unaffected), by error type", ["error"],
                                     registry=r)

    def serve(self, port: int, tries: int = METRICS_PORTS) -> int | None:
        """Serve on `port`, or the next free one of `tries` ports: several workers on one host each get
        their own (9464, 9465, ... in the order they start; scrape the range). The port, or None."""
        if port <= 0:
            return None
        last: OSError | None = None
        for p in range(port, min(port + tries, 65536)):
            try:
                start_http_server(p, registry=self.registry)
            except OSError as exc:
                last = exc
                continue
            log.info("metrics on http://0.0.0.0:%d/metrics%s", p, f" ({port} was taken)" if p != port else "")
            return p
        log.error("metrics not served: ports %d-%d all taken (%s); set CALLSTREAM_METRICS_PORT", port,
                  port + tries - 1, last)
        return None
