"""`callstream forget` and `callstream retention apply`: parse and print; the work is pipeline.privacy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.cli.base import Handler
from pipeline.settings import Settings


def register(sub: Any) -> dict[str, Handler]:
    fg = sub.add_parser("forget", help="erase a call (or one participant): rows, ledger, stored objects; tombstone")
    fg.add_argument("call_id", help="the call to erase")
    fg.add_argument("--participant", metavar="ID", help="only this participant (v1 chunks: agent or customer)")
    fg.add_argument("--lift", action="store_true", help="remove the tombstone: allow a re-delivery to be processed")
    fg.add_argument("--force", action="store_true", help="write the tombstone even for a call nothing is known of "
                                                         "(its chunks are refused if they arrive later)")
    rt = sub.add_parser("retention", help="`retention apply`: delete media no longer needed and what is older "
                                          "than the retention settings")
    rt.add_argument("retention_cmd", choices=["apply"], metavar="apply",
                    help="delete what the retention settings say is no longer needed")
    return {"forget": forget, "retention": retention}


def forget(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.privacy import Privacy

    privacy = Privacy(settings)
    try:
        what = f"{args.call_id}{'/' + args.participant if args.participant else ''}"
        if args.lift:
            lifted = privacy.lift(args.call_id, args.participant)
            done = "removed: re-published chunks will be processed again" if lifted else "not found"
            print(f"tombstone of {what} {done}")
            return 0
        if not args.force and not privacy.known(args.call_id):
            print(f"error: nothing is stored of call {args.call_id!r} (no call row, ledger row or tombstone): a "
                  f"typo? `callstream forget {args.call_id} --force` writes a tombstone anyway, so its chunks are "
                  "refused if they arrive later", file=sys.stderr)
            return 1
        r = privacy.forget(args.call_id, args.participant)
    finally:
        privacy.close()
    for error in r.errors:
        print(f"  {error}", file=sys.stderr)
    who = f"participant {args.participant} of call {args.call_id}" if args.participant else f"call {args.call_id}"
    print(f"forgot {who}: {r.segments} segment rows, {r.ledger_rows} ledger rows, {r.calls} call rows, "
          f"{r.objects} stored objects; a tombstone refuses its chunks if they are delivered again "
          f"(`callstream forget {args.call_id} --lift` to allow it)")
    if r.remaining:
        print(f"rows still present: {r.remaining}", file=sys.stderr)
        return 1
    if not args.participant:
        print(f"note: dead letters of this call on {settings.dlq_topic} expire with the topic's retention")
    return 0


def retention(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.privacy import Privacy

    privacy = Privacy(settings)
    try:
        r = privacy.apply_retention()
    finally:
        privacy.close()
    for error in r.errors:
        print(f"  {error}", file=sys.stderr)
    if r.done_media_deleted is None:
        print("CALLSTREAM_DELETE_CLAIM_CHECKS is off: claim-check objects of done chunks are kept")
    else:
        print(f"media of done chunks: {r.done_media_deleted} claim-check objects deleted "
              f"({r.done_media_gone} were gone already)")
    print(f"dead-letter media older than {settings.dlq_media_hours:g} h: {r.dead_letter_objects} claim-check objects, "
          f"{r.parked_payloads} parked payloads deleted")
    if r.aged is None:
        print("CALLSTREAM_RETENTION_DAYS is 0: timelines and ledger rows are kept")
    else:
        print(f"older than {settings.retention_days} days deleted: " + ", ".join(f"{v} {k}" for k, v in r.aged.items()))
    if r.errors:
        print(f"{len(r.errors)} object(s) could not be deleted: run `callstream retention apply` again when the "
              "object store answers", file=sys.stderr)
        return 1
    return 0
