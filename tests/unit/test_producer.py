"""The producer reports what did not make it: every send's acknowledgement is awaited."""

import pytest

from callstream_lab.synth import generate_call
from pipeline.ingest.producer import ChunkPublisher, PublishError, publish_recording
from pipeline.media.ffmpeg_bin import ffmpeg_exe
from pipeline.settings import Settings


class Future:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error


class FlakyProducer:
    """Acknowledges the first `ok` sends, then the broker goes away."""

    def __init__(self, ok):
        self.ok, self.sent = ok, []

    def send(self, topic, key=None, value=None, headers=None, partition=None):
        self.sent.append(dict(headers)["seq"])
        return Future(None if len(self.sent) <= self.ok else TimeoutError("KafkaTimeoutError: broker gone"))

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def publisher(producer):
    pub = ChunkPublisher.__new__(ChunkPublisher)
    pub.settings, pub.producer, pub._claims, pub._pending = Settings.from_env({}), producer, None, []
    return pub


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return generate_call(ffmpeg_exe(), tmp_path_factory.mktemp("p") / "r.mp4", seconds=12, width=160, height=90)


def test_a_broker_failing_mid_call_is_reported_with_the_chunks_it_lost(recording):
    pub = publisher(FlakyProducer(ok=1))
    with pytest.raises(PublishError) as err:
        publish_recording(pub.settings, recording, "c-1", publisher=pub, chunk_seconds=4)
    assert sorted(err.value.failed) == ["seq 1", "seq 2"] and err.value.sent == 1
    assert "seq 1" in str(err.value) and "seq 2" in str(err.value)


def test_every_acknowledged_chunk_is_returned(recording):
    pub = publisher(FlakyProducer(ok=100))
    sent = publish_recording(pub.settings, recording, "c-2", publisher=pub, chunk_seconds=4)
    assert [m.seq for m in sent] == [0, 1, 2] and sent[-1].end_of_call
