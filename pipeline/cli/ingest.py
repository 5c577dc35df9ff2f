"""`callstream produce | dlq | alerts`: what goes onto the topics and what comes off them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.base import CONNECT_TIMEOUT_S, Handler
from pipeline.errors import REASONS
from pipeline.settings import Settings


def register(sub: Any) -> dict[str, Handler]:
    al = sub.add_parser("alerts", help="live alerts: `alerts tail` prints them as they are published")
    al.add_argument("alerts_cmd", choices=["tail"], metavar="tail", help="print alerts as they are published")
    al.add_argument("--from-start", action="store_true", help="from the topic's beginning, not only new ones")
    al.add_argument("--max", type=int, metavar="N", help="exit after this many alerts")
    pr = sub.add_parser("produce", help="cut a recording into chunks and publish them")
    pr.add_argument("recording", nargs="?", help="a whole-call recording (v1 layouts: see --layout)")
    pr.add_argument("--call-id", required=True, type=_call_id,
                    help="the call's id: letters, digits and . _ : @ - (up to 128), as the chunk contract requires")
    pr.add_argument("--layout", choices=["dual", "agent", "customer"],
                    help="who is where in a whole-call recording: dual (agent left, customer right; stereo agent/"
                         "customer), or one participant filling the picture (agent, customer); default "
                         "CALLSTREAM_DEFAULT_LAYOUT")
    pr.add_argument("--participant", action="append", type=parse_participant, metavar="ID:ROLE=FILE[@OFFSET_MS]",
                    help="one participant's own recording (a track file, one direction of a phone call), placed "
                         "OFFSET_MS into the call; repeatable")
    pr.add_argument("--chime", metavar="FOLDER",
                    help="a Chime-style capture folder of per-attendee <UTC time>-<attendee>.mp4 chunk files")
    pr.add_argument("--role", action="append", type=_role_map, metavar="ATTENDEE=ROLE",
                    help="with --chime: an attendee's role (others: other, which is not analysed by default)")
    pr.add_argument("--mixed-audio", action="store_true",
                    help="with --chime: publish the mixed-audio files too, as participant 'mixed' (role other)")
    pr.add_argument("--chunk-seconds", type=float, metavar="SECONDS",
                    help="target chunk length (default CALLSTREAM_CHUNK_SECONDS); a stream copy cuts at key frames")
    pr.add_argument("--realtime", action="store_true", help="pace chunks as a live recorder would")
    pr.add_argument("--follow", action="store_true",
                    help="then show the workers' progress and print the call's timeline once every chunk is settled")
    pr.add_argument("--follow-timeout", type=float, default=600.0, metavar="SECONDS",
                    help="with --follow: how long to wait for the workers (default 600)")
    dl = sub.add_parser("dlq", help="list dead-lettered chunks; `dlq replay` re-publishes them")
    dl.add_argument("dlq_cmd", nargs="?", choices=["list", "replay"], default="list", metavar="list|replay",
                    help="list (the default): the dead letters with their reasons; replay: publish them again")
    dl.add_argument("--reason", choices=REASONS, metavar="REASON",
                    help=f"only this dlq-reason: one of {', '.join(REASONS)}")
    dl.add_argument("--call", help="only this call id")
    return {"produce": produce, "dlq": dlq, "alerts": alerts}


def utc(stamp: str) -> str:
    """An ISO time with its zone as UTC to the second, saying so ("2026-12-05 11:49:09 UTC")."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if when.tzinfo is None:
        return f"{when:%Y-%m-%d %H:%M:%S} (zone unknown)"
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def alerts(settings: Settings, args: argparse.Namespace) -> int:
    """Live alerts as they are published (the topic, not the table: what a supervisor's screen sees)."""
    import json

    from pipeline.contract import AlertMessage
    from pipeline.ingest.topics import tail

    def show(value: bytes | None) -> None:
        try:
            a = AlertMessage.decode(value)
        except ValueError:
            print(f"(not an alert: {value[:80] if value else value!r})", flush=True)
            return
        print(f"{utc(a.published_at)}  {a.call_id}  {a.participant_id} ({a.role})  {a.rule}  "
              f"{a.start_ms / 1000:.0f}-{a.end_ms / 1000:.0f}s  {json.dumps(a.values)}", flush=True)

    print(f"waiting for alerts on {settings.alerts_topic} at {settings.bootstrap_servers}"
          f"{' (from its beginning)' if args.from_start else ''}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        tail(settings, settings.alerts_topic, show, from_start=args.from_start, limit=args.max)
    except KeyboardInterrupt:
        pass
    return 0


def parse_participant(spec: str) -> tuple[str, str, Path, int]:
    """ID:ROLE=FILE[@OFFSET_MS] -> (id, role, file, offset)."""
    from pipeline.contract import PARTICIPANT_ID, ROLES

    who, sep, rest = spec.partition("=")
    pid, _, role = who.rpartition(":")
    if not sep or not pid or role not in ROLES or not PARTICIPANT_ID.match(pid):
        raise argparse.ArgumentTypeError(f"--participant {spec!r}: expected ID:ROLE=FILE[@OFFSET_MS] with ROLE one of "
                                         f"{', '.join(ROLES)} and ID matching {PARTICIPANT_ID.pattern}")
    path, at, offset = rest.rpartition("@") if "@" in rest and rest.rpartition("@")[2].isdigit() else (rest, "", "0")
    return pid, role, Path(path), int(offset)


def produce(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipeline.ingest.producer import (
        ChunkPublisher,
        PublishError,
        Upload,
        chime_uploads,
        participant_uploads,
        publish_uploads,
        recording_uploads,
    )

    sources = sum(bool(x) for x in (args.recording, args.participant, args.chime))
    if sources != 1:
        print("error: give one of: a RECORDING (with --layout), --participant ID:ROLE=FILE[@OFFSET_MS] "
              "(repeatable), or --chime FOLDER", file=sys.stderr)
        return 2
    uploads: list[Upload] = []
    if args.recording:
        uploads = recording_uploads(settings, Path(args.recording), args.layout, args.chunk_seconds)
        if (args.layout or settings.default_layout) == "dual":
            for warning in dual_layout_warnings(settings, Path(args.recording)):
                print(f"warning: {warning}", file=sys.stderr)
    elif args.participant:
        for pid, role, path, offset in args.participant:
            uploads += participant_uploads(settings, pid, role, path, offset, args.chunk_seconds)
    else:
        roles = dict(args.role or [])
        uploads = chime_uploads(settings, Path(args.chime), roles, mixed_audio=args.mixed_audio)
    publisher = ChunkPublisher(settings, connect_timeout_s=CONNECT_TIMEOUT_S)   # the broker answers, or one line
    bar = tqdm(desc=f"publishing {args.call_id}", unit="chunk", total=len(uploads), disable=None)  # no bars in a log
    try:
        sent = publish_uploads(settings, args.call_id, uploads, realtime=args.realtime, publisher=publisher,
                               on_chunk=lambda meta, size: bar.update(1))
    except PublishError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        publisher.close()
    claims = sum(1 for m in sent if m.claim_check)
    who = sorted({f"{m.participant_id} ({m.role})" for m in sent if m.participant_id})
    print(f"published {len(sent)} chunks of call {args.call_id} to {settings.chunks_topic}"
          + (f" ({claims} through the claim check)" if claims else "")
          + (f"; participants: {', '.join(who)}" if who else ""))
    # A Chime folder's files are the recorder's own chunks: their lengths are reported, not judged.
    lengths, too_long = chunk_lengths([u.end_ms - u.start_ms for u in uploads],
                                      None if args.chime else args.chunk_seconds or settings.chunk_seconds)
    print(lengths)
    if too_long:
        print(f"warning: {too_long}", file=sys.stderr)
    unanalysed = sorted({m.role for m in sent if m.role and m.role not in settings.roles})
    if unanalysed:
        print(f"note: roles {', '.join(unanalysed)} are not in CALLSTREAM_ANALYSED_ROLES; their media will not "
              "be analysed (see README, For deployers)")
    if not args.follow:
        return 0
    return follow(settings, args.call_id, len(sent), args.follow_timeout)


def chunk_lengths(lengths_ms: list[int], target_s: float | None) -> tuple[str, str | None]:
    """How long the published chunks are, and a warning when the recording's key frames made them much
    longer than asked: a chunk is only seen once whole, so its length is the floor of every latency."""
    if not lengths_ms:
        return "no chunks", None
    s = sorted(ms / 1000 for ms in lengths_ms)
    line = f"chunk lengths: {s[0]:.1f}-{s[-1]:.1f} s, median {s[len(s) // 2]:.1f} s"
    if target_s is None:
        return line, None
    line += f" (asked {target_s:g} s)"
    # The last chunk may be short; only longer ones count.
    if s[-1] > 1.5 * target_s and s[-1] - target_s >= 1.0:
        return line, (f"chunks are up to {s[-1]:.1f} s, not the {target_s:g} s asked: a stream copy cuts only at key "
                      f"frames, and this recording has them further apart. Rows, alerts and latency come a chunk "
                      f"at a time: re-encode with a key frame every {target_s:g} s or less (ffmpeg -force_key_frames "
                      f"'expr:gte(t,n_forced*{target_s:g})'), or configure the recorder so")
    return line, None


def dual_layout_warnings(settings: Settings, recording: Path) -> tuple[str, ...]:
    """What the default two-view layout would get wrong about this recording (a heuristic: it warns,
    the layout stays what the user chose; see pipeline/media/layout.py)."""
    from pipeline.errors import BadChunk
    from pipeline.media.ffmpeg_bin import ffmpeg_exe
    from pipeline.media.layout import check_dual, sample_frames
    from pipeline.media.probe import probe

    ffmpeg = ffmpeg_exe(settings.ffmpeg_binary)
    try:
        info = probe(ffmpeg, recording)
    except BadChunk:
        return ()    # cut() read it; what it is made of is the workers' business
    frames = sample_frames(ffmpeg, recording) if info.video is not None else None
    return check_dual(info, frames).warnings


def follow(settings: Settings, call_id: str, chunks: int, timeout: float) -> int:
    """Wait for the workers to settle the call's chunks, then print its timeline (as the demo does)."""
    from pipeline.cli.calls import erased_line, print_timeline, wait_for_call
    from pipeline.store.db import sync_engine
    from pipeline.store.queries import erased_at, refused

    engine = sync_engine(settings)
    try:
        erased = erased_at(engine, call_id)
        if erased is not None:   # every chunk will be refused: waiting for rows would only time out
            print(f"error: {erased_line(call_id, erased, refused(engine, call_id))}", file=sys.stderr)
            return 1
    finally:
        engine.dispose()
    done, failed = wait_for_call(settings, call_id, chunks, timeout)
    if done + failed < chunks:
        print(f"error: {done + failed} of {chunks} chunks of {call_id} settled in {timeout:.0f} s: is a worker "
              "running (`callstream worker`)? `callstream status` shows the backlog", file=sys.stderr)
        return 1
    print(f"{done} chunks done, {failed} dead-lettered" + (" (`callstream dlq --call " + call_id + "`)"
                                                            if failed else ""))
    return print_timeline(settings, call_id)


def _call_id(value: str) -> str:
    """The contract's own rule, checked before anything is published (a worker would refuse it)."""
    from pipeline.contract import CALL_ID

    if not CALL_ID.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a call id the contract accepts ({CALL_ID.pattern}): "
                                         "every worker would dead-letter its chunks as malformed_header")
    return value


def _role_map(spec: str) -> tuple[str, str]:
    from pipeline.contract import ROLES

    pid, _, role = spec.partition("=")
    if role not in ROLES or not pid:
        raise argparse.ArgumentTypeError(f"--role {spec!r}: expected ATTENDEE=ROLE, ROLE one of {', '.join(ROLES)}")
    return pid, role


def dlq(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.ingest import dlq

    letters = dlq.select(dlq.read_all(settings), args.reason, args.call)
    if args.dlq_cmd == "replay":
        # Nothing of an unreadable offset was read: there is no message to publish again.
        unreadable = [d for d in letters if d.reason == "unreadable_batch"]
        if unreadable:
            print(f"not replayed: {len(unreadable)} unreadable_batch letter(s) (the consumer could not read "
                  f"those offsets, so they carry no message; the broker's log holds their bytes)")
            letters = [d for d in letters if d.reason != "unreadable_batch"]
        n = dlq.replay(settings, letters)
        print(f"replayed {n} dead-lettered chunks to {settings.chunks_topic}")
        return 0
    for d in letters:
        print(dlq.describe(d))
    print(f"{len(letters)} dead-lettered chunks in {settings.dlq_topic}")
    return 0
