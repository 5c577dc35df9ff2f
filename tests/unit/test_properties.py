"""Property-based: arbitrary header maps and values end as rows or a BadChunk, never anything else.

The handler runs the real ChunkProcessor (real ffmpeg over the bytes) with a fake model and store."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.contract import parse
from pipeline.errors import BadChunk
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings
from pipeline.worker.handler import MessageHandler
from pipeline.worker.process import ChunkProcessor
from tests.unit.fakes import FakeDLQ, FakeTriton, FakeWriter, delivery

NAMES = ["callstream-schema", "call-id", "seq", "start-ms", "duration-ms", "end-of-call", "layout",
         "claim-check", "call-started-at", "published-at-ms", "content-type", "CALL-ID", "x-other"]
VALID = {"callstream-schema": b"1", "call-id": b"c-1", "seq": b"0", "start-ms": b"0"}

header_value = st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode),
                         st.integers(-2**70, 2**70).map(lambda i: str(i).encode()),
                         st.sampled_from([b"", b"1", b"true", b"dual", b"s3://callstream-chunks/a/../b",
                                          b"2026-01-01T00:00:00+00:00", b"nan", b"1e9"]))
header_list = st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), header_value),
                       max_size=12)
mixed_headers = st.builds(lambda extra, keep: [(k, v) for k, v in VALID.items() if k in keep] + extra,
                          header_list, st.sets(st.sampled_from(sorted(VALID))))


@settings(max_examples=400, deadline=None)
@given(headers=st.one_of(header_list, mixed_headers), key=st.one_of(st.none(), st.binary(max_size=20)))
def test_the_parser_returns_meta_or_bad_chunk(headers, key):
    try:
        parse(headers, key)
    except BadChunk:
        pass


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from callstream_lab.synth import generate_call
    from pipeline.media.cut import cut

    path = generate_call(ffmpeg_exe(), tmp_path_factory.mktemp("m") / "c.mp4", seconds=3)
    return cut(ffmpeg_exe(), path, 5.0)[0].path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_handler_settles_every_message(sample, data):
    value = data.draw(st.one_of(
        st.binary(max_size=2000),
        st.builds(lambda a, b: sample[a:b], st.integers(0, len(sample)), st.integers(0, len(sample))),
        st.builds(lambda i, b: sample[:i] + bytes([b]) + sample[i + 1:], st.integers(0, len(sample) - 1),
                  st.integers(0, 255)),
        st.just(sample), st.just(b"ffconcat version 1.0\nfile /etc/passwd\n"),
        st.just(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\nhttp://127.0.0.1/x.ts\n")))
    headers = data.draw(st.one_of(mixed_headers, st.just(list(VALID.items()))))
    writer, dlq = FakeWriter(), FakeDLQ()
    processor = ChunkProcessor(Settings.from_env({}), FakeTriton(), None, ffmpeg_exe(), "m", "1")
    h = MessageHandler(processor, writer, dlq, retry_initial_s=0.001, retry_max_s=0.001, max_attempts=2)
    outcome = asyncio.run(asyncio.wait_for(h.handle(delivery("t", 0, 0, b"c-1", value, headers)), timeout=60))
    if outcome == "done":
        assert len(writer.commits) == 1 and not dlq.sent and not writer.failures
    else:
        assert outcome == "failed" and len(dlq.sent) == 1 and len(writer.failures) == 1
        assert dlq.reasons()[0] != "processing_error", dlq.sent[0][2]


def _settle(sample_value, headers):
    writer, dlq = FakeWriter(), FakeDLQ()
    processor = ChunkProcessor(Settings.from_env({"CALLSTREAM_DECODE_WINDOW_S": "1"}), FakeTriton(), None,
                               ffmpeg_exe(), "m", "1")
    h = MessageHandler(processor, writer, dlq, retry_initial_s=0.001, retry_max_s=0.001, max_attempts=2)
    return asyncio.run(h.handle(delivery("t", 0, 0, b"c-1", sample_value, headers))), writer, dlq


def test_a_valid_chunk_streams_to_the_same_grid_in_small_windows(sample):
    outcome, writer, _ = _settle(sample, list(VALID.items()) + [("layout", b"customer")])
    assert outcome == "done"
    rows = writer.commits[0][1]
    spans = [(r["start_ms"], r["end_ms"]) for r in rows]
    assert spans[:2] == [(0, 1000), (1000, 2000)] and spans[2][0] == 2000 and abs(spans[2][1] - 3000) <= 100


def test_a_day_long_duration_header_is_clamped_to_the_media(sample):
    headers = list(VALID.items()) + [("layout", b"customer"), ("duration-ms", b"86400000")]
    outcome, writer, _ = _settle(sample, headers)
    assert outcome == "done" and len(writer.commits[0][1]) == 3
    assert "clamped" in writer.commits[0][2]["note"]


@pytest.mark.parametrize("value", [b"ffconcat version 1.0\nfile c.mp4\n", b"#EXTM3U\nhttp://127.0.0.1/a.ts\n",
                                   b"file:///etc/passwd"])
def test_files_that_name_other_files_are_never_opened(value):
    outcome, _, dlq = _settle(value, list(VALID.items()))
    assert outcome == "failed" and dlq.reasons() == ["undecodable"]


def test_a_dual_chunk_under_the_default_policy_sends_only_the_customer_to_the_model(sample):
    triton = FakeTriton()
    writer, dlq = FakeWriter(), FakeDLQ()
    processor = ChunkProcessor(Settings.from_env({}), triton, None, ffmpeg_exe(), "m", "1")
    h = MessageHandler(processor, writer, dlq, retry_initial_s=0.001, retry_max_s=0.001)
    headers = list(VALID.items()) + [("layout", b"dual")]
    assert asyncio.run(h.handle(delivery("t", 0, 0, b"c-1", sample, headers))) == "done"
    rows = writer.commits[0][1]
    assert rows and {r["participant_id"] for r in rows} == {"customer"} and triton.items == len(rows)


@pytest.mark.parametrize("env, consent, layout, analysed", [
    ({}, None, b"customer", True), ({}, b"emotion", b"customer", True), ({}, b"none", b"customer", False),
    ({"CALLSTREAM_REQUIRE_CONSENT": "true"}, None, b"customer", False),
    ({"CALLSTREAM_REQUIRE_CONSENT": "true"}, b"emotion", b"customer", True),
    ({}, None, b"agent", False),   # an agent-only chunk under the default policy
])
def test_consent_and_roles_decide_whether_media_is_analysed_at_all(sample, env, consent, layout, analysed):
    triton, writer = FakeTriton(), FakeWriter()
    processor = ChunkProcessor(Settings.from_env(env), triton, None, ffmpeg_exe(), "m", "1")
    h = MessageHandler(processor, writer, FakeDLQ(), retry_initial_s=0.001, retry_max_s=0.001)
    headers = list(VALID.items()) + [("layout", layout)] + ([("consent", consent)] if consent else [])
    assert asyncio.run(h.handle(delivery("t", 0, 0, b"c-1", sample, headers))) == "done"
    rows, ledger = writer.commits[0][1], writer.commits[0][2]
    assert bool(rows) == analysed and bool(triton.items) == analysed
    assert analysed or ledger["note"].startswith("not analysed")


@pytest.mark.parametrize("env, headers, what", [
    # A start past the default 24 h of call time: refused from the headers, before anything is fetched.
    ({}, [("start-ms", str(25 * 3600 * 1000).encode()), ("layout", b"customer")], "start-ms=90000000"),
    # Media that decodes past the limit (a 3-s chunk, a 1-s limit): refused once its length is known.
    ({"CALLSTREAM_MAX_CALL_S": "1"}, [("layout", b"customer")], "chunk reaches 3"),
])
def test_call_time_past_the_limit_is_dead_lettered_before_any_row(sample, env, headers, what):
    """CALLSTREAM_MAX_CALL_S bounds the rows (no-media rows included) a call can make: one header far in
    the future must not fill hours of gap rows."""
    writer, dlq, triton = FakeWriter(), FakeDLQ(), FakeTriton()
    processor = ChunkProcessor(Settings.from_env(env), triton, None, ffmpeg_exe(), "m", "1")
    h = MessageHandler(processor, writer, dlq, retry_initial_s=0.001, retry_max_s=0.001)
    merged = list({**VALID, **dict(headers)}.items())
    assert asyncio.run(h.handle(delivery("t", 0, 0, b"c-1", sample, merged))) == "failed"
    assert dlq.reasons() == ["malformed_header"] and not writer.commits
    assert what in writer.failures[0][1]["error_detail"]
