"""The Grafana dashboard's main panels, rendered with matplotlib from metrics scraped during a real run
(docs/OPERATIONS.md shows it): what an operator would see, without a Grafana server on this machine."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(body: str) -> Sample:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


class Scraper(threading.Thread):
    """Scrapes the given /metrics URLs every `interval` seconds until stopped; keeps (time, samples)."""

    def __init__(self, urls: list[str], interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.urls, self.interval = urls, interval
        self.snapshots: list[tuple[float, Sample]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            merged: Sample = defaultdict(float)
            for url in self.urls:
                try:
                    body = urllib.request.urlopen(url, timeout=5).read().decode()
                except OSError:
                    continue
                for k, v in parse(body).items():
                    merged[k] += v       # replicas sum, as Prometheus's sum() would
            self.snapshots.append((time.time(), dict(merged)))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def _total(s: Sample, name: str, **labels: str) -> float:
    """Sum of a series over the labels not given. The parser names a counter's samples `<name>_total`
    even where the exporter (Triton) writes them without the suffix: both spellings count."""
    want, names = set(labels.items()), (name, f"{name}_total")
    return sum(v for (n, lab), v in s.items() if n in names and want <= set(lab))


def _quantile(buckets: dict[float, float], q: float) -> float:
    """histogram_quantile over cumulative bucket counts (upper bound -> count)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return float("nan")
    rank, prev_b, prev_c = q * total, 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if b == float("inf"):
                return prev_b
            return prev_b + (b - prev_b) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_b, prev_c = b, c
    return prev_b


def render(snapshots: list[tuple[float, Sample]], out: Path, title: str, window_s: float = 10.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = snapshots[0][0]
    xs, rate, lag, p50, p95, batch, queue = [], [], [], [], [], defaultdict(list), defaultdict(list)
    models = sorted({dict(lab).get("model", "") for s in (snapshots[-1][1],) for (n, lab) in s
                     if n in ("nv_inference_exec_count", "nv_inference_exec_count_total")})
    for i, (t, s) in enumerate(snapshots):
        j = max((k for k in range(i) if t - snapshots[k][0] >= window_s), default=None)
        if j is None:
            continue
        tp, sp = snapshots[j]
        dt = t - tp
        xs.append(t - t0)
        rate.append((_total(s, "callstream_chunks_total", outcome="done")
                     - _total(sp, "callstream_chunks_total", outcome="done")) / dt)
        lag.append(_total(s, "callstream_consumer_lag"))
        buckets: dict[float, float] = defaultdict(float)
        for (n, lab), v in s.items():
            if n == "callstream_publish_to_commit_seconds_bucket":
                buckets[float(dict(lab)["le"])] += v - sp.get((n, lab), 0.0)
        p50.append(_quantile(buckets, 0.5))
        p95.append(_quantile(buckets, 0.95))
        for m in models:
            execs = _total(s, "nv_inference_exec_count", model=m) - _total(sp, "nv_inference_exec_count", model=m)
            items = _total(s, "nv_inference_count", model=m) - _total(sp, "nv_inference_count", model=m)
            reqs = (_total(s, "nv_inference_request_success", model=m)
                    - _total(sp, "nv_inference_request_success", model=m))
            qus = (_total(s, "nv_inference_queue_duration_us", model=m)
                   - _total(sp, "nv_inference_queue_duration_us", model=m))
            batch[m].append(items / execs if execs else np.nan)
            queue[m].append(qus / reqs / 1000 if reqs else np.nan)
    fig, ax = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    ax[0, 0].plot(xs, rate)
    ax[0, 0].set_title("Throughput: done chunks/s")
    ax[0, 1].plot(xs, lag, color="tab:red")
    ax[0, 1].set_title("Consumer lag (messages, all partitions)")
    ax[1, 0].plot(xs, p50, label="p50")
    ax[1, 0].plot(xs, p95, label="p95")
    ax[1, 0].set_title("Publication to commit (s)")
    ax[1, 0].legend()
    twin = ax[1, 1].twinx()
    for m in models:
        ax[1, 1].plot(xs, batch[m], label=f"{m} batch")
        twin.plot(xs, queue[m], ls="--", label=f"{m} queue ms")
    ax[1, 1].set_title("Triton: batch size (solid), queue ms per request (dashed)")
    ax[1, 1].legend(fontsize=7, loc="upper left")
    for a in ax.flat:
        a.grid(alpha=0.3)
    for a in ax[1]:
        a.set_xlabel(f"seconds into the run ({window_s:.0f}-s windows)")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
