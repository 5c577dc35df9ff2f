"""Recordings shaped like real recorders' (README §Recorders), published out of order and twice, through
the real stack. Every participant's timeline must be the exact grid: contiguous 1-s rows in call time,
no overlap, only the last one short; with rows marked 'none' where they sent no media at all."""

import random
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from callstream_lab.synth import generate_track
from pipeline.contract import ChunkMeta, parse_channels
from pipeline.ingest.producer import ChunkPublisher, Upload, chime_uploads, participant_uploads
from pipeline.media.cut import cut
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.store.queries import TIMELINE_CHECK
from tests.e2e.helpers import query, wait_chunks

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def recorders(stack):
    env, settings = stack.isolated("recorders")
    worker = stack.start_worker(env, "recorders")
    yield settings
    assert worker.poll() is None, f"worker died:\n{stack.worker_log('recorders')}"
    stack.stop_worker(worker)


def publish_shuffled(settings, call_id: str, metas_payloads: list[tuple[ChunkMeta, bytes]], seed: int) -> None:
    """Every chunk twice, in a shuffled order: a recorder retrying, several uploaders racing."""
    order = metas_payloads * 2
    random.Random(seed).shuffle(order)
    with ChunkPublisher(settings) as pub:
        for meta, payload in order:
            pub.publish(meta, payload)
        pub.wait()


def publish_uploads_shuffled(settings, call_id: str, uploads: list[Upload], seed: int) -> None:
    publish_shuffled(settings, call_id, [(u.meta(call_id), u.path.read_bytes()) for u in uploads], seed)


def timeline(settings, call_id: str) -> list:
    return query(settings, "SELECT participant_id, role, start_ms, end_ms, media, face_found, speech_found, label "
                           "FROM emotion_timeline WHERE call_id = :c ORDER BY participant_id, start_ms", c=call_id)


def assert_exact_grid(settings, call_id: str, participant: str, first_ms: int, end_ms: int) -> list:
    """The README's check finds nothing, and the participant's rows are exactly the cells first..end (the
    end within the few ms of encoder padding a codec adds: Opus's 12 s file lasts 12.008 s)."""
    assert query(settings, TIMELINE_CHECK, call_id=call_id) == []
    rows = [r for r in timeline(settings, call_id) if r.participant_id == participant]
    cells = list(range(first_ms, end_ms, 1000))
    assert [r.start_ms for r in rows] == cells, [(r.start_ms, r.end_ms) for r in rows]
    assert [r.end_ms for r in rows[:-1]] == [c + 1000 for c in cells[:-1]]
    assert abs(rows[-1].end_ms - end_ms) <= 30, rows[-1]
    return rows


def test_chime_per_attendee_five_second_video_files(recorders, tmp_path):
    """Amazon Chime SDK media capture: 5-s MP4s per attendee, named by UTC start and attendee id, video
    only (the audio is mixed). The customer's camera starts 700 ms after the agent's: off the grid."""
    settings = recorders
    t0 = datetime(2026, 11, 26, 9, 30, 0, tzinfo=UTC)
    for who, offset, speaker in (("att-cust-1", 700, 1), ("att-agent-1", 0, 0)):
        for k in range(4):
            at = t0 + timedelta(milliseconds=offset + 5000 * k)
            name = at.strftime("%Y-%m-%d-%H-%M-%S-") + f"{at.microsecond // 1000:03d}-{who}.mp4"
            generate_track(ffmpeg_exe(), tmp_path / "video" / name, 5, audio=False, speaker=speaker, gop_seconds=1)
    uploads = chime_uploads(settings, tmp_path, {"att-cust-1": "customer", "att-agent-1": "agent"})
    assert {(u.participant_id, u.role, u.media) for u in uploads} == {("att-cust-1", "customer", "video"),
                                                                      ("att-agent-1", "agent", "video")}
    publish_uploads_shuffled(settings, "e2e-chime", uploads, seed=1)
    wait_chunks(settings, "e2e-chime", 8)
    rows = assert_exact_grid(settings, "e2e-chime", "att-cust-1", 0, 20700)
    assert {r.media for r in rows} == {"video"} and not any(r.speech_found for r in rows)
    faced = [r for r in rows if r.face_found]
    assert len(faced) >= 18 and {r.label for r in faced} == {"happy"}
    # The agent is not analysed under the default policy: nothing of theirs is stored.
    assert {r.participant_id for r in timeline(settings, "e2e-chime")} == {"att-cust-1"}
    (status,) = query(settings, "SELECT status FROM call_summary WHERE call_id = 'e2e-chime'")[0]
    assert status == "complete"


def test_twilio_track_files_with_offsets_a_muted_gap_and_the_camera_switched_off(recorders, tmp_path):
    """Twilio Video: one file per track, each with its offset from the room's start. The customer's VP8
    video (MKV) runs 5 s; their Opus audio (MKA) runs 6 s, is muted for 3 s, and comes back for 12 s."""
    settings = recorders
    ff = ffmpeg_exe()
    video = generate_track(ff, tmp_path / "cust-video.mkv", 5, audio=False, vcodec="libvpx")
    before = generate_track(ff, tmp_path / "cust-audio-1.mka", 6, video=False, acodec="libopus")
    after = generate_track(ff, tmp_path / "cust-audio-2.mka", 12, video=False, acodec="libopus")
    uploads = (participant_uploads(settings, "PA-cust", "customer", video, 1300, 5)
               + participant_uploads(settings, "PA-cust", "customer", before, 1300, 5))
    # The audio after the mute is a stream of its own (the recorder's next file): seqs continue.
    later = participant_uploads(settings, "PA-cust", "customer", after, 10300, 5)
    audio_seqs = max(u.seq for u in uploads if u.media == "audio") + 1
    uploads = [u if u.media != "audio" else Upload(**{**u.__dict__, "end_of_call": False}) for u in uploads]
    uploads += [Upload(**{**u.__dict__, "seq": u.seq + audio_seqs}) for u in later]
    assert {u.media for u in uploads} == {"video", "audio"}
    publish_uploads_shuffled(settings, "e2e-twilio", uploads, seed=2)
    wait_chunks(settings, "e2e-twilio", len(uploads))
    rows = assert_exact_grid(settings, "e2e-twilio", "PA-cust", 1000, 22300)
    by = {r.start_ms: r for r in rows}
    assert {by[c].media for c in (2000, 3000, 4000, 5000)} == {"av"}          # camera on, audio on
    assert all(by[c].face_found for c in (2000, 3000, 4000, 5000))
    assert by[7000].media == "audio"                                           # camera off, audio till 7.3 s
    assert [by[c].media for c in (8000, 9000)] == ["none", "none"]             # muted: no media at all
    assert not any(by[c].face_found or by[c].speech_found or by[c].label for c in (8000, 9000))
    assert {r.media for r in rows if r.start_ms >= 10000} == {"audio"}
    # No audio is lost after the camera stops: the customer speaks after 10.3 s and it is analysed.
    assert any(r.speech_found for r in rows if r.start_ms >= 10000)
    (status,) = query(settings, "SELECT status FROM call_summary WHERE call_id = 'e2e-twilio'")[0]
    assert status == "complete"


def test_connect_eight_khz_audio_per_direction(recorders, tmp_path):
    """Amazon Connect: AUDIO_FROM_CUSTOMER and AUDIO_TO_CUSTOMER as separate 8 kHz tracks (Matroska PCM)."""
    settings = recorders
    ff = ffmpeg_exe()
    customer = generate_track(ff, tmp_path / "from-customer.mka", 14, video=False, speaker=1,
                              acodec="pcm_s16le", rate=8000)
    agent = generate_track(ff, tmp_path / "to-customer.mka", 14, video=False, speaker=0,
                           acodec="pcm_s16le", rate=8000)
    uploads = (participant_uploads(settings, "AUDIO_FROM_CUSTOMER", "customer", customer, 0, 4)
               + participant_uploads(settings, "AUDIO_TO_CUSTOMER", "agent", agent, 0, 4))
    publish_uploads_shuffled(settings, "e2e-connect", uploads, seed=3)
    wait_chunks(settings, "e2e-connect", len(uploads))
    rows = assert_exact_grid(settings, "e2e-connect", "AUDIO_FROM_CUSTOMER", 0, 14000)
    assert {r.media for r in rows} == {"audio"} and not any(r.face_found for r in rows)
    assert sum(r.speech_found for r in rows) >= 3
    assert {r.participant_id for r in timeline(settings, "e2e-connect")} == {"AUDIO_FROM_CUSTOMER"}


def test_genesys_dual_channel_mu_law_with_a_channel_map(recorders, tmp_path):
    """Genesys Cloud: dual-channel 8 kHz G.711, internal (agent) left and external (customer) right; the
    `audio-channels` header maps them. Chunks cut at 3.5 s: every boundary is off the grid."""
    settings = recorders
    ff = ffmpeg_exe()
    call = generate_track(ff, tmp_path / "genesys.wav", 15, video=False, channels=2, acodec="pcm_mulaw", rate=8000)
    chunks = cut(ff, call, 3.5)
    channels = parse_channels("internal=agent,external=customer")
    metas = [(ChunkMeta("e2e-genesys", c.seq, c.start_ms, duration_ms=c.end_ms - c.start_ms,
                        end_of_call=c.seq == len(chunks) - 1, audio_channels=channels, media="audio"),
              c.path.read_bytes()) for c in chunks]
    publish_shuffled(settings, "e2e-genesys", metas, seed=4)
    wait_chunks(settings, "e2e-genesys", len(chunks))
    rows = assert_exact_grid(settings, "e2e-genesys", "external", 0, 15000)
    assert {r.role for r in rows} == {"customer"} and {r.media for r in rows} == {"audio"}
    assert sum(r.speech_found for r in rows) >= 3
    assert {r.participant_id for r in timeline(settings, "e2e-genesys")} == {"external"}


@pytest.mark.parametrize(("codec", "suffix"), [("libopus", "mka"), ("aac", "mka")])
def test_a_track_whose_container_rounds_its_end_up_ends_on_the_grid(recorders, tmp_path, codec, suffix):
    """A 20-s audio track cut at 6.85 s and 13.7 s and encoded per piece, as a recorder uploading as it
    goes does: the last Opus piece declares 6.31 s and decodes 6.30 s; the last AAC piece declares
    6.32 s and decodes its priming too (6.315 s). Exactly 20 rows, the last ending at 20 s: no 21st
    cell from a rounding."""
    settings, ff = recorders, ffmpeg_exe()
    call = f"e2e-end-{codec}"
    src = generate_track(ff, tmp_path / f"src.{suffix}", 20, video=False, acodec=codec)
    chunks = []
    for seq, (a, b) in enumerate(((0.0, 6.85), (6.85, 13.7), (13.7, 20.0))):
        out = tmp_path / f"piece{seq}.{suffix}"
        subprocess.run([ff, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-ss", str(a), "-to", str(b),
                        "-c:a", codec, "-ac", "1", str(out)], check=True)
        chunks.append((ChunkMeta(call, seq, int(round(a * 1000)), end_of_call=seq == 2, participant_id="PA-cust",
                                 role="customer", media="audio"), out.read_bytes()))
    publish_shuffled(settings, call, chunks, seed=5)
    wait_chunks(settings, call, 3)
    rows = assert_exact_grid(settings, call, "PA-cust", 0, 20000)
    assert len(rows) == 20 and rows[-1].end_ms == 20000
