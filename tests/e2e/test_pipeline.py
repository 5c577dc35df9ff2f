"""Through the whole stack: kafka-python producer -> tansu or Apache Kafka -> Faust worker -> ffmpeg -> Triton
-> Postgres. Both brokers' runs share one database, so every call id carries the broker's name."""


import pytest

from pipeline.contract import ChunkMeta
from pipeline.ingest.producer import ChunkPublisher, publish_recording
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from tests.e2e.helpers import assert_contiguous, query, segments, wait_chunks

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module", params=["tansu", "kafka"])
def pipeline(request):
    stack = request.getfixturevalue("stack" if request.param == "tansu" else "kafka_stack")
    env, settings = stack.isolated("main")
    name = f"main-{request.param}"
    worker = stack.start_worker(env, name)
    yield stack, env, settings, worker
    assert worker.poll() is None, f"worker died:\n{stack.worker_log(name)}"
    stack.stop_worker(worker)


def cid(settings, name: str) -> str:
    return f"{name}-{settings.embedded_broker}"


def test_a_call_comes_out_complete_and_in_order_for_the_customer_only(pipeline, media):
    """The default policy: the customer is analysed; the agent's media never reaches the model."""
    stack, env, settings, _ = pipeline
    call = cid(settings, "e2e-call-1")
    sent = publish_recording(settings, media["call20"], call)
    assert len(sent) == 4 and sent[-1].end_of_call
    wait_chunks(settings, call, 4)
    rows = segments(settings, call)
    assert_contiguous(rows, "customer", 0, 20000)
    assert len(rows) == 20 and {r.track for r in rows} == {"customer"}
    agent = query(settings, "SELECT count(*) FROM emotion_segments WHERE call_id=:c AND track <> 'customer'", c=call)
    assert agent[0][0] == 0
    # Nor is the agent's talk measured: that needs CALLSTREAM_SPEECH_ACTIVITY_ROLES.
    assert query(settings, "SELECT count(*) FROM speech_activity WHERE call_id=:c", c=call)[0][0] == 0
    # The face is the smiling astronaut: wherever a face is seen, the label is happy.
    faced = [r for r in rows if r.face_found]
    assert len(faced) >= 14 and all(r.label == "happy" for r in faced)
    # The customer leaves the picture from 12 s to 15 s.
    away = [r for r in rows if r.track == "customer" and 12000 <= r.start_ms < 15000]
    assert away and not any(r.face_found for r in away)
    assert any(r.speech_found for r in rows if r.track == "customer")
    (status,) = query(settings, "SELECT status FROM call_summary WHERE call_id=:c", c=call)[0]
    assert status == "complete"


def test_duplicates_and_disorder_do_not_change_the_timeline(pipeline, media):
    stack, env, settings, _ = pipeline
    call = cid(settings, "e2e-dup")
    chunks = cut(ffmpeg_exe(), media["call10"], 5.0)
    with ChunkPublisher(settings) as pub:
        # Out of order, and every chunk twice: as a recorder retrying after a timeout would.
        for chunk in list(reversed(chunks)) + chunks:
            meta = ChunkMeta(call, chunk.seq, chunk.start_ms, duration_ms=chunk.end_ms - chunk.start_ms,
                             end_of_call=chunk.seq == len(chunks) - 1)
            pub.publish(meta, chunk.path.read_bytes())
    wait_chunks(settings, call, len(chunks))
    from tests.stack import wait_for

    wait_for(lambda: query(settings, "SELECT count(*) FROM chunks WHERE call_id=:c", c=call)[0][0]
             == 2 * len(chunks),
             120, "both deliveries in the ledger")
    rows = segments(settings, call)
    keys = [(r.track, r.start_ms) for r in rows]
    assert len(keys) == len(set(keys)) == 10
    assert_contiguous(rows, "customer", 0, 10000)


def test_claim_check_carries_large_chunks_and_agents_need_both_settings(stack, media):
    """Outside the EU prohibition (e.g. a safety use), agents are analysed only with both settings."""
    env, settings = stack.isolated("claims")
    env["CALLSTREAM_INLINE_LIMIT_BYTES"] = "50000"
    env["CALLSTREAM_ANALYSED_ROLES"] = "customer,agent"
    env["CALLSTREAM_ALLOW_EMPLOYEE_EMOTION_RECOGNITION_PROHIBITED_IN_EU"] = "true"
    from pipeline.settings import Settings

    settings = Settings.from_env(env)
    worker = stack.start_worker(env, "claims")
    try:
        sent = publish_recording(settings, media["call10"], "e2e-claims")
        assert all(m.claim_check and m.claim_check.startswith("s3://") for m in sent)
        wait_chunks(settings, "e2e-claims", len(sent))
        rows = segments(settings, "e2e-claims")
        assert len(rows) == 20 and {r.track for r in rows} == {"agent", "customer"}
        assert any(r.speech_found for r in rows if r.track == "agent")
        assert "Article 5(1)(f)" in stack.worker_log("claims")
    finally:
        stack.stop_worker(worker)


def test_produce_follow_shows_the_timeline_once_the_workers_are_done(pipeline, media):
    import os
    import subprocess
    import sys

    from pipeline.settings import REPO_ROOT

    _, env, settings, _ = pipeline
    call = cid(settings, "e2e-follow")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", str(media["call10"]), "--call-id",
                          call, "--follow", "--follow-timeout", "180"], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"published 2 chunks of call {call}" in out.stdout and "2 chunks done, 0 dead-lettered" in out.stdout
    # The timeline as `callstream timeline` prints it: one line per segment of the customer.
    assert out.stdout.count("customer") >= 10, out.stdout
    assert query(settings, "SELECT count(*) FROM emotion_segments WHERE call_id = :c", c=call)[0][0] == 10


def test_a_single_camera_recording_with_the_default_layout_gets_a_warning_that_names_the_fix(pipeline, tmp_path):
    """A centred webcam face under `dual` is cut in two and found in neither half: produce says so, and
    the layout it names finds the face."""
    import os
    import subprocess
    import sys

    from callstream_lab.synth import generate_track
    from pipeline.settings import REPO_ROOT

    _, env, settings, _ = pipeline
    webcam = generate_track(ffmpeg_exe(), tmp_path / "webcam.mp4", 5, width=640, height=360,
                            speaker=0)   # one face in the middle, one voice (mono) talking from 0.3 s

    def produce(call_id, *extra):
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", str(webcam), "--call-id", call_id,
                              *extra, "--follow", "--follow-timeout", "180"], capture_output=True, text=True,
                             env={**os.environ, **env}, cwd=REPO_ROOT, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out

    dual, customer = cid(settings, "e2e-webcam-dual"), cid(settings, "e2e-webcam-customer")
    as_dual = produce(dual)
    assert "warning: the picture looks like one camera's view" in as_dual.stderr, as_dual.stderr
    assert "warning: the audio is mono" in as_dual.stderr and "--layout customer" in as_dual.stderr
    faced = query(settings, "SELECT count(*) FILTER (WHERE face_found) FROM emotion_segments "
                            "WHERE call_id = :c", c=dual)[0][0]
    assert faced == 0                      # what the warning is about: the face straddles the halves
    as_customer = produce(customer, "--layout", "customer")
    assert "warning" not in as_customer.stderr, as_customer.stderr
    faced, voiced = query(settings, "SELECT count(*) FILTER (WHERE face_found), count(*) FILTER (WHERE speech_found) "
                                    "FROM emotion_segments WHERE call_id = :c", c=customer)[0]
    assert faced >= 4 and voiced >= 1
