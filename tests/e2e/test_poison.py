"""Never stuck: a corpus of poison messages, each followed by a good chunk on the same partition.

Every good chunk's rows land, every poison ends on the DLQ with its reason and a failed ledger row,
odd-but-valid input ends as rows, and the worker stays up throughout."""

import json
import os
import struct
import time

import pytest

from callstream_lab.synth import generate_call
from pipeline.contract import ChunkMeta
from pipeline.ingest import dlq
from pipeline.ingest.claimcheck import s3_client
from pipeline.ingest.producer import ChunkPublisher
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from tests.e2e.helpers import query, wait_chunks
from tests.stack import wait_for

pytestmark = pytest.mark.stack

PARTITIONS = 4


def h(call, seq=0, start=0, **kw):
    return [(k, v) for k, v in ChunkMeta(call, seq, start, **kw).headers()]


def sub(headers, name, value):
    return [(k, value if k == name else v) for k, v in headers]


def poison_corpus(good: bytes, mp4: bytes, bucket: str, c: str = "p") -> list[tuple[str, bytes | None, list, set[str]]]:
    """(call id, value, headers, acceptable reasons); every call id starts with `c`."""
    ts_garbage = b"".join(b"\x47" + os.urandom(187) for _ in range(20))
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(200)
    wav_empty = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) \
        + b"data" + struct.pack("<I", 0)
    corpus = [
        (f"{c}-bigstart", good, sub(h(f"{c}-bigstart"), "start-ms", b"99999999999999999999"), {"malformed_header"}),
        (f"{c}-bigseq", good, sub(h(f"{c}-bigseq"), "seq", str(2**31).encode()), {"malformed_header"}),
        (f"{c}-negstart", good, sub(h(f"{c}-negstart"), "start-ms", b"-5"), {"malformed_header"}),
        (f"{c}-zerodur", good, h(f"{c}-zerodur") + [("duration-ms", b"0")], {"malformed_header"}),
        (f"{c}-hugedur", good, h(f"{c}-hugedur") + [("duration-ms", b"999999999999")], {"malformed_header"}),
        (f"{c}-repeat", good, h(f"{c}-repeat") + [("SEQ", b"1")], {"malformed_header"}),
        (f"{c}-manyhdr", good, h(f"{c}-manyhdr") + [(f"x-{i}", b"v") for i in range(80)], {"malformed_header"}),
        (f"{c}-longhdr", good, h(f"{c}-longhdr") + [("content-type", b"x" * 10_000)], {"malformed_header"}),
        (f"{c}-notutf8", good, sub(h(f"{c}-notutf8"), "seq", b"\xff\xfe"), {"malformed_header"}),
        (f"{c}-keymismatch", good, h(f"{c}-other"), {"malformed_header"}),
        (f"{c}-badid", good, sub(h(f"{c}-badid"), "call-id", b"x; rm -rf /"), {"malformed_header"}),
        (f"{c}-noschema", good, [x for x in h(f"{c}-noschema") if x[0] != "callstream-schema"], {"missing_header"}),
        (f"{c}-schema2", good, sub(h(f"{c}-schema2"), "callstream-schema", b"2"), {"unknown_schema"}),
        (f"{c}-layout", good, h(f"{c}-layout", layout=None) + [("layout", b"grid")], {"malformed_header"}),
        (f"{c}-started", good, h(f"{c}-started") + [("call-started-at", b"yesterday")], {"malformed_header"}),
        (f"{c}-eoc", good, sub(h(f"{c}-eoc"), "end-of-call", b"maybe"), {"malformed_header"}),
        (f"{c}-pubat", good, h(f"{c}-pubat") + [("published-at-ms", b"99999999999999999999")], {"malformed_header"}),
        (f"{c}-empty", b"", h(f"{c}-empty"), {"empty_value"}),
        (f"{c}-both", good, h(f"{c}-both", claim_check=f"s3://{bucket}/calls/x/000000.mkv"), {"malformed_header"}),
        (f"{c}-traverse", b"", h(f"{c}-traverse", claim_check="s3://otherbucket/../../etc/passwd"),
         {"claim_check_refused"}),
        (f"{c}-secret", b"", h(f"{c}-secret", claim_check="s3://secretbucket/private/call.mkv"),
         {"claim_check_refused"}),
        (f"{c}-query", b"", h(f"{c}-query", claim_check=f"s3://{bucket}/calls/a.mkv?versionId=1"),
         {"claim_check_refused"}),
        (f"{c}-missing", b"", h(f"{c}-missing", claim_check=f"s3://{bucket}/calls/nope/000000.mkv"),
         {"claim_check_missing"}),
        (f"{c}-ffconcat", b"ffconcat version 1.0\nfile some.mkv\n", h(f"{c}-ffconcat"), {"undecodable"}),
        (f"{c}-hls", b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://127.0.0.1:1/a.ts\n", h(f"{c}-hls"),
         {"undecodable"}),
        (f"{c}-sdp", b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nm=audio 5004 RTP/AVP 0\n",
         h(f"{c}-sdp"), {"undecodable"}),
        (f"{c}-png", png, h(f"{c}-png"), {"undecodable"}),
        (f"{c}-random", os.urandom(50_000), h(f"{c}-random"), {"undecodable"}),
        (f"{c}-fakemp4", b"\x00\x00\x00\x18ftypisom" + os.urandom(5000), h(f"{c}-fakemp4"),
         {"undecodable", "no_media_streams"}),
        (f"{c}-fakemkv", b"\x1a\x45\xdf\xa3" + os.urandom(5000), h(f"{c}-fakemkv"),
         {"undecodable", "no_media_streams"}),
        (f"{c}-fakets", ts_garbage, h(f"{c}-fakets"), {"undecodable", "no_media_streams"}),
        (f"{c}-emptywav", wav_empty, h(f"{c}-emptywav"), {"undecodable", "no_media_streams"}),
        (f"{c}-truncated", mp4[: len(mp4) // 2], h(f"{c}-truncated"), {"truncated"}),
        (f"{c}-bigjunk", os.urandom(3_000_000), h(f"{c}-bigjunk"), {"undecodable"}),   # parked in S3 for the DLQ
    ]
    return corpus


def test_poison_corpus_never_stalls_a_partition(any_stack, media, tmp_path):
    stack = any_stack
    run = stack.settings.embedded_broker   # both brokers' runs share one database: call ids carry its name
    env, _ = stack.isolated("poison")
    env.update(CALLSTREAM_INLINE_LIMIT_BYTES="4000000", CALLSTREAM_DLQ_INLINE_LIMIT_BYTES="1000000",
               CALLSTREAM_PARTITIONS=str(PARTITIONS))
    settings = Settings.from_env(env)
    ff = ffmpeg_exe()
    short = generate_call(ff, tmp_path / "short.mp4", seconds=2.4)
    good = cut(ff, short, 5.0)[0].path.read_bytes()
    mp4 = media["call10"].read_bytes()
    corpus = poison_corpus(good, mp4, settings.claim_check_bucket, f"p-{run}")
    assert len(corpus) >= 30
    # Odd but valid: a day-long duration-ms on a 2.4-s chunk is clamped to the media (and noted);
    # end-of-call on seq 0 followed by seq 1 and 2 still completes the call.
    daylong, eoc = f"odd-daylong-{run}", f"odd-eoc-{run}"
    odd = [(daylong, good, h(daylong, duration_ms=86_400_000, layout="customer", end_of_call=True))]
    odd += [(eoc, good, h(eoc, seq=s, start=s * 2400, end_of_call=s == 0, layout="customer"))
            for s in range(3)]
    worker = stack.start_worker(env, f"poison-{run}")
    t0 = time.time()
    try:
        with ChunkPublisher(settings) as pub:
            for i, (call, value, headers, _) in enumerate(corpus):
                part = i % PARTITIONS
                pub.publish_raw(value, call.encode(), headers, partition=part)
                pub.publish_raw(good, f"good-{run}-{i}".encode(),
                                h(f"good-{run}-{i}", layout="customer", end_of_call=True), partition=part)
            for call, value, headers in odd:
                pub.publish_raw(value, call.encode(), headers)
            pub.wait()

        def settled() -> int:
            return query(settings, "SELECT count(*) FROM chunks WHERE topic=:t", t=settings.chunks_topic)[0][0]

        expected = 2 * len(corpus) + len(odd)
        deadline = time.time() + 400
        while settled() < expected and time.time() < deadline:
            assert worker.poll() is None, stack.worker_log(f"poison-{run}")
            time.sleep(1)
        elapsed = time.time() - t0
        assert settled() == expected, f"{settled()} of {expected} settled after {elapsed:.0f}s"
        done = {r[0] for r in query(settings, "SELECT call_id FROM chunks WHERE status='done' AND topic=:t",
                                    t=settings.chunks_topic)}
        assert {f"good-{run}-{i}" for i in range(len(corpus))} <= done
        rows = query(settings, "SELECT partition, \"offset\", status, error_reason FROM chunks WHERE topic=:t "
                               "ORDER BY partition, \"offset\"", t=settings.chunks_topic)
        by_place = {(r[0], r[1]): r for r in rows}
        letters = {d.source: d for d in dlq.read_all(settings)}
        # Poison i is the (i // PARTITIONS)-th pair on partition i % PARTITIONS: offsets 2k, 2k+1.
        for i, (call, _, _, reasons) in enumerate(corpus):
            place = (i % PARTITIONS, 2 * (i // PARTITIONS))
            row = by_place[place]
            assert row[2] == "failed" and row[3] in reasons, (call, row)
            letter = letters[f"{settings.chunks_topic}/{place[0]}/{place[1]}"]
            assert letter.reason == row[3], call
        last = len(corpus) - 1
        big = letters[f"{settings.chunks_topic}/{last % PARTITIONS}/{2 * (last // PARTITIONS)}"]
        parked = big.header("dlq-payload")
        assert big.value == b"" and parked.startswith("s3://")
        b, k = parked[5:].split("/", 1)
        assert len(s3_client(settings).get_object(Bucket=b, Key=k)["Body"].read()) == 3_000_000
        note = query(settings, "SELECT note, segments FROM chunks WHERE call_id=:c", c=daylong)[0]
        assert "clamped" in note[0] and note[1] <= 4
        status = query(settings, "SELECT status, chunks_past_end FROM call_summary WHERE call_id=:c", c=eoc)[0]
        assert tuple(status) == ("complete", 2)
        assert worker.poll() is None, stack.worker_log(f"poison-{run}")
        print(json.dumps({"messages": expected, "seconds": round(elapsed, 1)}))
    finally:
        stack.stop_worker(worker)


def test_dlq_replay_after_the_cause_is_fixed_adds_no_duplicates(stack, tmp_path):
    env, settings = stack.isolated("replay")
    ff = ffmpeg_exe()
    chunk = cut(ff, generate_call(ff, tmp_path / "r.mp4", seconds=2.4), 5.0)[0].path.read_bytes()
    key = "calls/e2e-replay/000000.mkv"
    uri = f"s3://{settings.claim_check_bucket}/{key}"
    worker = stack.start_worker(env, "replay")
    try:
        with ChunkPublisher(settings) as pub:   # the recorder announced the chunk before uploading it
            pub.publish_raw(b"", b"e2e-replay", h("e2e-replay", claim_check=uri, end_of_call=True))
            pub.wait()
        wait_chunks(settings, "e2e-replay", 1, status="failed")
        letters = dlq.select(dlq.read_all(settings), reason="claim_check_missing", call_id="e2e-replay")
        assert len(letters) == 1
        s3_client(settings).put_object(Bucket=settings.claim_check_bucket, Key=key, Body=chunk)
        done = "SELECT count(*) FROM chunks WHERE call_id='e2e-replay' AND status='done'"
        # Replaying twice must not duplicate rows; the second copy comes after the first deleted the
        # payload it shares, as a redelivery after a crash would, and is done, not dead-lettered again.
        for n in (1, 2):
            assert dlq.replay(settings, letters) == 1
            wait_for(lambda n=n: query(settings, done)[0][0] >= n, 120, f"replay {n} processed",
                     log=lambda: stack.worker_log("replay"))
        notes = query(settings, "SELECT segments, note FROM chunks WHERE call_id='e2e-replay' AND status='done' "
                                "ORDER BY \"offset\"")
        assert notes[0][0] >= 1 and notes[1][0] == 0 and "redelivered" in notes[1][1]
        assert len(dlq.select(dlq.read_all(settings), call_id="e2e-replay")) == 1
        rows = query(settings, "SELECT track, start_ms, count(*) FROM emotion_segments WHERE call_id='e2e-replay' "
                               "GROUP BY 1, 2")
        assert rows and all(r[2] == 1 for r in rows)
        assert query(settings, "SELECT status FROM call_summary WHERE call_id='e2e-replay'")[0][0] == "complete"
    finally:
        stack.stop_worker(worker)
