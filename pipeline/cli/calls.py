"""`callstream timeline`: a call's rows as the analyst sees them, and waiting for a call's chunks."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.cli.base import Handler
from pipeline.settings import Settings


def register(sub: Any) -> dict[str, Handler]:
    t = sub.add_parser("timeline", help="print a call's timeline; --plot writes a PNG")
    t.add_argument("call_id", help="the call's id, as its chunks' call-id header gave it")
    t.add_argument("--plot", metavar="PNG", help="also draw the timeline into this PNG file")
    t.add_argument("--explain", action="store_true", help="also print, per labelled segment, the evidence behind "
                   "its label, with the words said in it where transcripts are kept and readable")
    t.add_argument("--model", metavar="VERSION", help="the model version to show (`model_version`, e.g. toy/1); "
                                                       "default: the primary model's (CALLSTREAM_TRITON_MODEL)")
    return {"timeline": timeline}


def timeline(settings: Settings, args: argparse.Namespace) -> int:
    return print_timeline(settings, args.call_id, Path(args.plot) if args.plot else None, args.model, args.explain)


def primary_version(settings: Settings, present: dict[str, int]) -> str:
    """The version CALLSTREAM_TRITON_MODEL serves, where the call has its rows; else the version with
    the most segments (a repository this command cannot read, a model switched since)."""
    try:
        from pipeline.model.repository import installed

        for version in installed(settings.model_repository):
            if version.triton_name == settings.triton_model and version.model_version in present:
                return version.model_version
    except Exception:   # an unreadable repository is no reason not to show the call
        pass
    return next(iter(present))


def print_timeline(settings: Settings, call_id: str, plot: Path | None = None, model: str | None = None,
                   explain: bool = False) -> int:
    from pipeline.report import KEY, format_explained, format_summary, format_timeline, plot_timeline
    from pipeline.store.db import sync_engine
    from pipeline.store.queries import erased_at, progress, refused, said, timeline, track_summary, versions

    engine = sync_engine(settings)
    present = versions(engine, call_id)
    if not present:
        erased = erased_at(engine, call_id)
        if erased is not None:
            print(erased_line(call_id, erased, refused(engine, call_id)), file=sys.stderr)
        else:
            print(no_segments_line(call_id, *progress(engine, call_id)), file=sys.stderr)
        return 1
    version = model or primary_version(settings, present)
    if version not in present:
        print(f"error: call {call_id!r} has no rows of model {version!r}; it has "
              f"{', '.join(f'{v} ({n} segments)' for v, n in present.items())}", file=sys.stderr)
        return 1
    others = [f"{v} ({n} segments)" for v, n in present.items() if v != version]
    if others:
        print(f"model {version}; the call also has rows of {', '.join(others)}: `callstream timeline {call_id} "
              f"--model VERSION` shows one, the model_comparison view compares them", file=sys.stderr)
    rows = timeline(engine, call_id, version)
    print(format_timeline(rows))
    print(KEY)
    print(format_summary(track_summary(engine, call_id, version)))
    if explain:
        print(format_explained(rows, said(engine, call_id, version)))
    if plot is not None:
        print(f"plot written to {plot_timeline(rows, plot, f'call {call_id}')}")
    return 0


def no_segments_line(call_id: str, done: int, failed: int) -> str:
    """Why a call has no rows: nothing arrived yet, or its chunks were dead-lettered (and where to look)."""
    if failed:
        return (f"no segments for call {call_id!r}: {failed} of its chunk(s) were dead-lettered"
                f"{f' and {done} done without rows' if done else ''}; `callstream dlq --call {call_id}` lists "
                "them with their reasons")
    if done:
        return f"no segments for call {call_id!r}: {done} chunk(s) done, none with rows (not analysed: see " \
               f"the chunks ledger's note, e.g. CALLSTREAM_ANALYSED_ROLES or consent)"
    return f"no segments for call {call_id!r} yet: no chunk of it has been processed"


def erased_line(call_id: str, erased: Any, refusals: dict[str, Any]) -> str:
    """Why an erased call shows nothing, and whether anything of it arrived since."""
    when = "%Y-%m-%d %H:%M:%S %Z"
    since = (f"{refusals['n']} chunk(s) arrived since and were refused, the last at {refusals['last']:{when}}"
             if refusals["n"] else "no chunk of it has arrived since")
    return (f"call {call_id!r} was erased by `callstream forget` at {erased:{when}}; {since}. Its "
            f"chunks are refused if they arrive again (`callstream forget {call_id} --lift` allows them)")


def wait_for_call(settings: Settings, call_id: str, chunks: int, timeout: float, desc: str = "") -> tuple[int, int]:
    from tqdm import tqdm

    from pipeline.store.db import sync_engine
    from pipeline.store.queries import progress

    engine = sync_engine(settings)
    bar = tqdm(total=chunks, desc=desc or f"processing {call_id}", unit="chunk", disable=None)  # no bars in a log
    deadline = time.time() + timeout
    done = failed = 0
    while time.time() < deadline:
        done, failed = progress(engine, call_id)
        bar.n = done + failed
        bar.refresh()
        if done + failed >= chunks:
            break
        time.sleep(0.5)
    bar.close()
    engine.dispose()
    return done, failed
