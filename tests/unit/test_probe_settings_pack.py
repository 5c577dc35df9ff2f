import numpy as np
import pytest

from pipeline.errors import BadChunk
from pipeline.media.decode import is_truncated
from pipeline.media.ffargs import target_size
from pipeline.media.probe import channel_count, parse_report
from pipeline.settings import Settings
from pipeline.worker.triton_client import Item, pack

REPORT = """Input #0, matroska,webm, from 'chunk000001.mkv':
  Metadata:
    ENCODER         : Lavf61.7.100
  Duration: 00:00:05.02, start: 0.000000, bitrate: 393 kb/s
  Stream #0:0: Video: h264 (High), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], 15 fps, 15 tbr, 1k tbn
  Stream #0:1: Audio: aac (LC), 48000 Hz, stereo, fltp
At least one output file must be specified
"""


def test_parse_report_reads_streams_and_duration():
    info = parse_report(REPORT)
    assert info.duration_ms == 5020
    assert (info.video.codec, info.video.width, info.video.height, info.video.fps) == ("h264", 640, 360, 15.0)
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 2)


def test_parse_report_audio_only_and_garbage():
    info = parse_report("Input #0, wav, from 'x':\n  Duration: N/A\n"
                        "  Stream #0:0: Audio: pcm_s16le, 16000 Hz, mono, s16\n")
    assert info.video is None and info.audio.channels == 1 and info.duration_ms is None
    with pytest.raises(BadChunk) as err:
        parse_report("x.mkv: Invalid data found when processing input\n")
    assert err.value.reason == "undecodable"


def test_channel_layouts():
    assert [channel_count(x) for x in ("mono", "stereo", "5.1", "6 channels")] == [1, 2, 6, 6]


def test_target_size_keeps_aspect_even_and_never_upscales():
    assert target_size(1280, 720, 480) == (480, 270)
    assert target_size(320, 240, 480) == (320, 240)
    assert all(v % 2 == 0 for v in target_size(1001, 777, 333))


def test_settings_from_env_and_urls():
    s = Settings.from_env({"CALLSTREAM_PARTITIONS": "6", "CALLSTREAM_SAMPLE_FPS": "3.5",
                           "DATABASE_URL": "postgres://u@h:1/db"})
    assert s.partitions == 6 and s.sample_fps == 3.5
    assert s.sqlalchemy_url == "postgresql+psycopg://u@h:1/db"
    assert Settings.from_env({}).bootstrap_servers == "127.0.0.1:9092"
    with pytest.raises(ValueError):
        Settings.from_env({"CALLSTREAM_PARTITIONS": "many"})


def test_pack_pads_frames_and_audio_with_masks():
    items = [Item(np.ones((2, 4, 6, 3), np.uint8), np.ones(10, np.float32)),
             Item(np.ones((1, 4, 6, 3), np.uint8), np.zeros(0, np.float32))]
    t = pack(items)
    assert t["FRAMES"].shape == (2, 2, 4, 6, 3)
    assert t["FRAME_MASK"].tolist() == [[True, True], [True, False]]
    assert t["AUDIO"].shape == (2, 10) and t["AUDIO_LEN"].ravel().tolist() == [10, 0]
    empty = pack([Item(np.zeros((0, 1, 1, 3), np.uint8), np.ones(5, np.float32))])
    assert empty["FRAMES"].shape == (1, 1, 16, 16, 3) and not empty["FRAME_MASK"].any()


def test_truncation_is_decoding_much_less_than_declared():
    assert is_truncated(10_000, 5_000)
    assert not is_truncated(5_021, 4_970)      # AAC priming and frame sampling, not truncation
    assert not is_truncated(None, 100)         # live WebM fragments often declare no duration
    assert not is_truncated(800, 400)          # short chunks get an absolute tolerance


def test_analysing_employees_needs_a_second_explicit_setting():
    import pytest

    from pipeline.settings import Settings

    assert Settings.from_env({}).roles == {"customer"}
    with pytest.raises(ValueError, match=r"Art\. 5\(1\)\(f\)"):
        Settings.from_env({"CALLSTREAM_ANALYSED_ROLES": "customer,agent"})
    with pytest.raises(ValueError, match="unknown role"):
        Settings.from_env({"CALLSTREAM_ANALYSED_ROLES": "custmer"})
    both = Settings.from_env({"CALLSTREAM_ANALYSED_ROLES": "customer,agent",
                              "CALLSTREAM_ALLOW_EMPLOYEE_EMOTION_RECOGNITION_PROHIBITED_IN_EU": "true"})
    assert both.roles == {"customer", "agent"}


def test_settings_output_contains_no_secret():
    from pipeline.settings import Settings

    s = Settings.from_env({"DATABASE_URL": "postgresql://writer:hunter2@db/callstream?sslmode=require",
                           "CALLSTREAM_S3_SECRET_KEY": "s3cr3t-key"})
    printed = "\n".join(" ".join(row) for row in s.describe())
    assert "hunter2" not in printed and "s3cr3t-key" not in printed
    assert "postgresql://writer:********@db/callstream?sslmode=require" in printed


@pytest.mark.parametrize("env, says", [
    ({"CALLSTREAM_PARTITIONS": "twelve"}, "CALLSTREAM_PARTITIONS='twelve' is not an integer"),
    ({"CALLSTREAM_WORKER_CONCURRENCY": "-2"}, "CALLSTREAM_WORKER_CONCURRENCY='-2': must be >= 1"),
    ({"CALLSTREAM_RETENTION_DAYS": "-1"}, "CALLSTREAM_RETENTION_DAYS='-1': must be >= 0"),
    ({"CALLSTREAM_SAMPLE_FPS": "0"}, "CALLSTREAM_SAMPLE_FPS='0': must be > 0"),
    ({"CALLSTREAM_PG_PORT": "70000"}, "CALLSTREAM_PG_PORT='70000': must be >= 0, <= 65535"),
    ({"CALLSTREAM_DEFAULT_LAYOUT": "grid"}, "CALLSTREAM_DEFAULT_LAYOUT='grid'; accepted: dual, agent, customer"),
    ({"CALLSTREAM_ANALYSED_ROLES": "custmer"}, "accepted: customer, agent, supervisor, other"),
    ({"CALLSTREAM_FAST_DECODE": "ture"}, "CALLSTREAM_FAST_DECODE='ture' is not a boolean; accepted: true, false"),
    ({"CALLSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "accepted: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
])
def test_a_wrong_setting_is_refused_naming_the_variable_and_what_it_accepts(env, says):
    from pipeline.settings import SettingsError

    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert says in str(err.value)


def test_settings_read_the_mapping_given_not_the_process_environment(monkeypatch):
    """from_env(mapping) is what a test or a second stack configures: a variable exported in the shell
    (the README's namespace recipe exports CALLSTREAM_S3_PORT) must not leak into it."""
    monkeypatch.setenv("CALLSTREAM_S3_PORT", "9999")
    assert Settings.from_env({}).s3_port == 8333
    assert Settings.from_env().s3_port == 9999
    assert Settings.from_env({"CALLSTREAM_S3_PORT": "8444", "DATABASE_URL": "postgresql://h/db",
                              "CALLSTREAM_FFMPEG": "/usr/bin/ffmpeg"}).s3_port == 8444


def test_every_setting_has_its_variable_and_a_description():
    from pipeline.settings import variable

    names = [variable(n) for n in Settings.model_fields]
    assert len(names) == len(set(names)) and all(n == "DATABASE_URL" or n.startswith("CALLSTREAM_") for n in names)
    assert all(f.description for f in Settings.model_fields.values())
    assert variable("ffmpeg_binary") == "CALLSTREAM_FFMPEG" and variable("partitions") == "CALLSTREAM_PARTITIONS"
    with pytest.raises(Exception, match="frozen"):
        Settings.from_env({}).partitions = 3


def test_secrets_are_secret_types_and_never_printed():
    s = Settings.from_env({"CALLSTREAM_S3_SECRET_KEY": "s3cr3t", "CALLSTREAM_KAFKA_SASL_PASSWORD": "pw",
                           "DATABASE_URL": "postgresql://u:dbpa55@db:5432/x"})
    assert "s3cr3t" not in repr(s) and "pw'" not in repr(s) and "dbpa55" not in repr(s)
    assert s.db_url == "postgresql://u:dbpa55@db:5432/x"
    assert "postgresql://u:********@db:5432/x" in [v for _, v, _ in s.describe()]
    assert s.s3_secret_key.get_secret_value() == "s3cr3t"
    assert all("s3cr3t" not in value for _, value, _ in s.describe())


def test_the_cli_stops_on_a_wrong_setting_before_doing_anything(monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.setenv("CALLSTREAM_MAX_ATTEMPTS", "0")
    assert main(["status"]) == 2
    assert "CALLSTREAM_MAX_ATTEMPTS='0': must be >= 1" in capsys.readouterr().err


def test_a_metadata_value_cannot_pass_for_a_stream_or_a_duration():
    """ffmpeg prints metadata as `key : value`; a title that reads like a stream line is still a title."""
    report = ("Input #0, matroska,webm, from 'file:x':\n  Metadata:\n"
              "    title           : Stream #0:0: Video: h264, 16x16\n"
              "    comment         : Duration: 99:00:00.00, Stream #0:1: Audio: pcm_s16le, 8000 Hz, 7 channels\n"
              "  Duration: 00:00:05.00, start: 0.000000, bitrate: 399 kb/s\n"
              "  Stream #0:0: Video: h264 (High), yuv420p(progressive), 640x360, 15 fps, 15 tbr, 1k tbn\n"
              "  Stream #0:1: Audio: aac (LC), 48000 Hz, stereo, fltp\n")
    info = parse_report(report)
    assert info.duration_ms == 5000 and (info.video.width, info.video.height) == (640, 360)
    assert info.audio.channels == 2


@pytest.mark.parametrize("demuxer", ["matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2"])
def test_a_chunk_stamped_with_its_call_time_declares_its_own_length(demuxer):
    """Matroska and fragmented MP4 chunks whose times start 37 s into the call: ffmpeg prints where the
    last frame ends as the Duration, and the chunk is 4.22 s long, not 41.22."""
    report = (f"Input #0, {demuxer}, from 'file:x':\n"
              "  Duration: 00:00:41.22, start: 37.000000, bitrate: 94 kb/s\n"
              "  Stream #0:0: Video: h264 (High), yuv420p(progressive), 320x240, 30 fps, 30 tbr, 15360 tbn\n")
    assert parse_report(report).duration_ms == 4220


def test_a_command_whose_extra_is_not_installed_says_which_one(monkeypatch, capsys, tmp_path):
    """The core install is a worker's; `timeline --plot`, `generate`, `models` and the bench need extras."""
    import sys

    from pipeline.cli import main

    monkeypatch.setitem(sys.modules, "skimage", None)   # as if not installed: importing it fails
    assert main(["generate", str(tmp_path / "call.mp4")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'callstream[lab]'" in err and "generate" in err


def test_every_decoding_argv_pins_the_demuxer_and_the_file_protocol():
    """The argv builders are pure: whatever the options and streams, the input is one pinned demuxer
    reading one file, and a chunk's path is one argument, never a shell string."""
    from pathlib import Path

    from pipeline.media.ffargs import audio_argv, decoder_input, muxed_argv, video_argv

    path = Path("/dev/shm/callstream-chunk-1-x; rm -rf ~")
    opts = decoder_input(path, "matroska", fast=True)
    argvs = [muxed_argv("ffmpeg", opts, fps=2.0, frame_width=480, scaler="area", video=True, audio=True,
                        channels=None),
             video_argv("ffmpeg", opts, 2.0, (480, 270), "area"), audio_argv("ffmpeg", opts, 2)]
    for argv in argvs:
        i = argv.index("-i")
        assert argv[i + 1] == f"file:{path}" and argv.count("-i") == 1
        assert argv[argv.index("-f") + 1] == "matroska" and argv[argv.index("-protocol_whitelist") + 1] == "file"
