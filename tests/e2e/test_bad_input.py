"""Every kind of bad input ends on the dead-letter topic with its reason, as a failed ledger row, and the
worker keeps going; audio-only and video-only chunks are valid input."""

import os

import pytest

from pipeline.contract import H_DLQ_REASON, ChunkMeta
from pipeline.ingest.producer import ChunkPublisher
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from tests.e2e.helpers import query, segments, wait_chunks
from tests.stack import read_topic

pytestmark = pytest.mark.stack

MAX_CHUNK = 1_500_000


def _meta(call, seq=0, **kw):
    return ChunkMeta(call, seq, 0, **kw).headers()


def test_bad_chunks_are_dead_lettered_and_the_worker_goes_on(stack, media, tmp_path):
    env, _ = stack.isolated("bad")
    env["CALLSTREAM_MAX_CHUNK_BYTES"] = str(MAX_CHUNK)
    env["CALLSTREAM_INLINE_LIMIT_BYTES"] = str(4_000_000)
    settings = Settings.from_env(env)
    worker = stack.start_worker(env, "bad")
    good = cut(ffmpeg_exe(), media["call10"], 5.0)[0].path.read_bytes()
    mp4 = media["call10"].read_bytes()  # written with the index first, so a cut-off copy still opens
    schema_two = [(k, b"2" if k == "callstream-schema" else v) for k, v in _meta("bad-schema")]
    cases = {
        "not-media": (b"this is not a video, just text" * 100, _meta("bad-notmedia"), "undecodable"),
        "truncated": (mp4[: len(mp4) // 2], _meta("bad-truncated"), "truncated"),
        "empty": (b"", _meta("bad-empty"), "empty_value"),
        "no-headers": (good, [], "missing_header"),
        "malformed": (good, [(k, b"x" if k == "seq" else v) for k, v in _meta("bad-malformed")], "malformed_header"),
        "schema": (good, schema_two, "unknown_schema"),
        "claim": (b"", _meta("bad-claim", claim_check="s3://callstream-chunks/calls/nope/000000.mkv"),
                  "claim_check_missing"),
        "too-large": (os.urandom(MAX_CHUNK + 100_000), _meta("bad-large"), "too_large"),
    }
    try:
        with ChunkPublisher(settings) as pub:  # max request size follows the 4 MB inline limit
            for value, headers, _ in cases.values():
                call = dict(headers).get("call-id", b"bad-noheaders").decode()
                pub.publish_raw(value, call.encode(), headers)
            # Valid input after the bad: an audio-only and a video-only chunk.
            for call, key in (("e2e-audio-only", "audio_only"), ("e2e-video-only", "video_only")):
                for chunk in cut(ffmpeg_exe(), media[key], 5.0):
                    pub.publish(ChunkMeta(call, chunk.seq, chunk.start_ms, duration_ms=chunk.end_ms - chunk.start_ms,
                                          layout="customer", end_of_call=True), chunk.path.read_bytes())
        wait_chunks(settings, "e2e-audio-only", 1)
        wait_chunks(settings, "e2e-video-only", 1)
        dead = read_topic(settings, settings.dlq_topic, expect=len(cases), timeout=60)
        reasons = sorted(dict(m.headers)[H_DLQ_REASON].decode() for m in dead)
        assert reasons == sorted(r for _, _, r in cases.values())
        failed = query(settings, "SELECT error_reason, count(*) FROM chunks WHERE status='failed' AND topic=:t "
                                 "GROUP BY 1 ORDER BY 1", t=settings.chunks_topic)
        assert dict(failed) == {r: sum(1 for *_, x in cases.values() if x == r) for *_, r in cases.values()}
        # Dead letters keep the original payload so nothing is lost.
        by_reason = {dict(m.headers)[H_DLQ_REASON].decode(): m for m in dead}
        assert by_reason["undecodable"].value == cases["not-media"][0]
        audio = segments(settings, "e2e-audio-only")
        video = segments(settings, "e2e-video-only")
        assert audio and not any(r.face_found for r in audio) and any(r.speech_found for r in audio)
        assert video and any(r.face_found for r in video) and not any(r.speech_found for r in video)
        assert worker.poll() is None, stack.worker_log("bad")
    finally:
        stack.stop_worker(worker)
