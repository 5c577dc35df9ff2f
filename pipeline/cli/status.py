"""`callstream status | settings`: whether the pipeline keeps up, and what it is configured with."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import Any

from pipeline.cli.base import Handler
from pipeline.settings import Settings


def register(sub: Any) -> dict[str, Handler]:
    sub.add_parser("status", help="consumer lag per partition, dead letters, calls in progress (and the embedded "
                                  "stack's services, where it is installed)")
    sub.add_parser("settings", help="print every setting, its value and what it does")
    return {"status": status, "settings": show_settings}


def status(settings: Settings, args: argparse.Namespace) -> int:
    """Services, then whether the pipeline keeps up: lag per partition, DLQ depth, calls in progress.
    Each part says why it is unavailable instead of failing the whole command."""
    for section in entry_points(group="callstream.status"):   # the embedded stack's services, if installed
        try:
            for line in section.load()(settings):
                print(line)
        except Exception as exc:
            print(f"{section.name}: unavailable ({type(exc).__name__}: {exc})")
    try:
        from kafka.errors import AuthorizationError

        from pipeline.ingest.lag import group_lag, group_members, spans, topic_depth

        lags = group_lag(settings)
        known = [p.lag for p in lags if p.lag is not None]
        untrusted = [p.partition for p in lags if not p.trusted]
        total = f"at least {sum(known)}" if untrusted else str(sum(known))
        print(f"consumer group {settings.app_id} on {settings.chunks_topic}: lag {total}")
        print(f"  {'partition':>9} {'committed':>10} {'end':>8} {'lag':>6}")
        for p in lags:
            committed = "-" if p.committed is None else str(p.committed)
            print(f"  {p.partition:>9} {committed:>10} {p.end:>8} {'?' if p.lag is None else p.lag:>6}")
        if untrusted:
            print(f"  ? the broker reports end offsets below the group's committed offsets on partition(s) "
                  f"{', '.join(map(str, untrusted))}: their lag cannot be computed from offsets")
        members = group_members(settings)
        if isinstance(members, str):
            print(f"group members: not reported by this broker ({members})")
        else:
            print(f"group members: {len(members)}" + ("" if members else " (no worker is consuming)"))
            for m in members:
                held = spans(m.partitions) if m.partitions else "none"
                print(f"  {m.client_id} at {m.host or '?'}: partitions {held}")
        try:
            print(f"dead letters on {settings.dlq_topic}: {topic_depth(settings, settings.dlq_topic)}")
        except AuthorizationError:   # counting them reads the topic: a worker's principal may only write it
            who = settings.kafka_sasl_username or "this client"
            print(f"dead letters on {settings.dlq_topic}: not counted ({who} may not read that topic)")
    except Exception as exc:
        print(f"Kafka at {settings.bootstrap_servers} unavailable: {type(exc).__name__}: {exc}")
    try:
        from pipeline.store.db import sync_engine
        from pipeline.store.queries import in_progress, refused, unreadable

        engine = sync_engine(settings)
        try:
            calls = in_progress(engine)
            refusals = refused(engine)
            lost_batches = unreadable(engine, settings.chunks_topic)
        finally:
            engine.dispose()
        if lost_batches:
            print(f"offsets the consumer could not read (dead-lettered as unreadable_batch; see `callstream dlq "
                  f"--reason unreadable_batch`): {sum(r['n'] for r in lost_batches)}")
            for r in lost_batches:
                span = f"offset {r['first']}" if r["first"] == r["last"] else f"offsets {r['first']}-{r['last']}"
                print(f"  {r['topic']}/{r['partition']} {span}, the last at {r['at']:%Y-%m-%d %H:%M:%S %Z}")
        print(f"calls in progress: {len(calls)}")
        for c in calls[:20]:
            until = "-" if c["analysed_until_s"] is None else f"{float(c['analysed_until_s']):.0f}s"
            print(f"  {c['call_id']:<40} {c['chunks_done']:>4} chunks done, {c['chunks_failed']:>3} failed, "
                  f"analysed until {until}, {c['participants']} participant(s)")
        if refusals["n"]:
            print(f"chunks refused because their call was erased (`callstream forget`): {refusals['n']} of "
                  f"{refusals['calls']} call(s), the last at {refusals['last']:%Y-%m-%d %H:%M:%S %Z}")
    except Exception as exc:
        print(f"Postgres unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return 0


def show_settings(settings: Settings, args: argparse.Namespace) -> int:
    print("connections")
    rows = settings.connections()
    width = max(len(what) for what, _ in rows)
    for what, where in rows:
        print(f"  {what:<{width}}  {where}")
    print()
    described = settings.describe()
    name_w = max(len(env) for env, _, _ in described)
    value_w = min(40, max(len(value) for _, value, _ in described))
    for env, value, doc in described:
        print(f"{env:<{name_w}}  {value:<{value_w}}  {doc}")
    return 0
