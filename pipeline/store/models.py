"""The SQL surface analysts query (README §Querying). Names here are a public contract: change them
only with a migration and a note in the README."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, NotRequired, TypedDict

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# One DFEW probability column: NULL when nothing was observed in the segment.
Prob = Annotated[float | None, mapped_column(Float)]


class ChunkStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"   # not analysed, by rule: error_reason says why (call_erased: `callstream forget`)


REFUSED_ERASED = "call_erased"   # error_reason of a chunk refused because `callstream forget` erased its call


class PieceRow(TypedDict):
    """What one chunk observed of one participant in one grid cell (segment_pieces): the cell's row in
    emotion_segments is derived from all of its pieces, whichever chunks and streams they came from."""
    call_id: str
    participant_id: str
    role: str
    model_version: str
    model_name: str
    cell_ms: int
    stream: str
    seq: int
    start_ms: int
    end_ms: int
    video_ms: int
    audio_ms: int
    frames: int
    faces: int
    face_weight: float
    face_probs: list[float] | None
    speech_ratio: float
    arousal: float | None
    voice_probs: list[float] | None
    voice_cues: list[float] | None
    voice_dims: list[float | None] | None
    word_ms: NotRequired[int]                  # time of the words said in the piece (CALLSTREAM_WORDS)
    word_valence: NotRequired[float | None]    # their valence, -1..1


class UtteranceRow(TypedDict):
    """One utterance a chunk heard (the `words` model): text and words as CALLSTREAM_TRANSCRIPTS keeps them."""
    call_id: str
    participant_id: str
    role: str
    stream: str
    seq: int
    start_ms: int
    end_ms: int
    words_model: str
    word_count: int
    valence: float
    text: str | None
    words: list[list[Any]] | None
    open_start: bool
    open_end: bool


class TalkRow(TypedDict):
    """How much of one piece of a participant's audio was speech, for a role whose talk time alone is
    measured (the `speech` model; CALLSTREAM_SPEECH_ACTIVITY_ROLES): no emotion is in it."""
    call_id: str
    participant_id: str
    role: str
    stream: str
    seq: int
    cell_ms: int
    start_ms: int
    end_ms: int
    audio_ms: int
    speech_ms: int
    min_speech_ratio: float
    speech_model: str


class Heard(NamedTuple):
    """An utterance as the words model heard it, in memory only: what phrase alert rules read, whatever
    CALLSTREAM_TRANSCRIPTS lets be stored."""
    participant_id: str
    role: str
    start_ms: int
    end_ms: int
    text: str
    words_model: str


class SegmentRow(TypedDict):
    """What the writer upserts into emotion_segments for one (participant, grid cell)."""
    call_id: str
    participant_id: str
    role: str
    track: str
    start_ms: int
    end_ms: int
    model_version: str
    model_name: str
    neutral: float | None
    happy: float | None
    sad: float | None
    angry: float | None
    fear: float | None
    disgust: float | None
    surprise: float | None
    label: str | None
    confidence: float
    face_found: bool
    speech_found: bool
    face_score: float | None
    arousal: float | None
    arousal_source: str | None
    voice_valence: float | None
    voice_arousal: float | None
    voice_dominance: float | None
    speech_ratio: float | None
    word_valence: NotRequired[float | None]
    media: str
    video_ms: int
    audio_ms: int
    chunk_seq: int
    evidence: dict[str, Any] | None


class CallRow(TypedDict):
    call_id: str
    started_at: datetime | None
    layout: str | None
    last_seq: int | None


class LedgerEntry(TypedDict, total=False):
    """One consumed message in the chunks ledger; the key is (topic, partition, offset)."""
    topic: str
    partition: int
    offset: int
    worker: str
    size_bytes: int
    call_id: str
    stream: str
    seq: int
    end_of_call: bool
    start_ms: int
    claim_check: str | None
    published_at: datetime | None
    status: str
    duration_ms: int
    segments: int
    fetch_ms: float
    decode_ms: float
    inference_ms: float
    db_ms: float
    error_reason: str | None
    error_detail: str | None
    note: str | None
    processed_at: Any
    dead_lettered_at: Any


class LedgerEnd(NamedTuple):
    """The end recorded for one offset."""
    status: str
    dead_lettered: bool        # a failed chunk's dead letter is acknowledged by the broker
    error_reason: str | None
    error_detail: str | None
    worker: str | None


class Base(DeclarativeBase):
    pass


class Call(Base):
    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    layout: Mapped[str | None] = mapped_column(String(16))
    last_seq: Mapped[int | None] = mapped_column(Integer, comment="highest seq marked end-of-call, once seen")
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChunkLedger(Base):
    """One row per consumed message, keyed by its place in the log, so redelivery updates, not adds."""

    __tablename__ = "chunks"
    __table_args__ = (UniqueConstraint("topic", "partition", "offset", name="chunks_message_key"),
                      Index("chunks_call_seq", "call_id", "seq"),
                      Index("chunks_call_stream_seq", "call_id", "stream", "seq"),
                      Index("chunks_refused", "call_id", postgresql_where=text("status = 'refused'")),
                      Index("chunks_dead_letter_unsent", "topic", "partition",
                            postgresql_where=text("status = 'failed' AND dead_lettered_at IS NULL")))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    call_id: Mapped[str | None] = mapped_column(String(128))
    seq: Mapped[int | None] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(
        String(140), server_default="", comment="participant-id/media of a per-participant chunk; empty for whole-call "
                                                "chunks")
    end_of_call: Mapped[bool | None] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16),
                                        comment="done | failed | refused (error_reason says why: call_erased)")
    error_reason: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text, comment="what was adjusted on a done chunk, e.g. a clamped duration")
    start_ms: Mapped[int | None] = mapped_column(BigInteger)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    claim_check: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int | None] = mapped_column(Integer)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fetch_ms: Mapped[float | None] = mapped_column(Float)
    decode_ms: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    db_ms: Mapped[float | None] = mapped_column(Float, comment="time to commit the rows, measured up to the commit")
    worker: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="when a failed chunk's dead letter was acknowledged by the broker; "
                                         "NULL while it is still to be sent (the row is written first)")
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp(),
                                                   comment="when the chunk's rows were written, just before commit")


class Erasure(Base):
    """A tombstone left by `callstream forget`: later chunks of the call (or of its track) are refused."""

    __tablename__ = "erasures"
    __table_args__ = {"comment": "tombstones of callstream forget: chunks of these calls (track * = all) are refused"}

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    track: Mapped[str] = mapped_column(String(128), primary_key=True, server_default="*",
                                       comment="participant id, or * for the whole call")
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EmotionSegment(Base):
    """One row per (call, participant, grid cell, model version); probabilities in DFEW order. All seven
    are NULL, and label is NULL, when neither a face nor speech was observed; media is 'none' where the
    participant sent no media at all in the cell (a gap inside their timeline)."""

    __tablename__ = "emotion_segments"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    participant_id: Mapped[str] = mapped_column(String(128), primary_key=True,
                                                comment="recorder's id; agent | customer for v1 layouts")
    start_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), comment="customer | agent | supervisor | other")
    track: Mapped[str] = mapped_column(String(16), comment="deprecated (v1): the role")
    end_ms: Mapped[int] = mapped_column(BigInteger)
    neutral: Mapped[Prob]
    happy: Mapped[Prob]
    sad: Mapped[Prob]
    angry: Mapped[Prob]
    fear: Mapped[Prob]
    disgust: Mapped[Prob]
    surprise: Mapped[Prob]
    label: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    face_found: Mapped[bool] = mapped_column(Boolean)
    speech_found: Mapped[bool] = mapped_column(Boolean)
    face_score: Mapped[float | None] = mapped_column(Float, comment="mean face-detection confidence")
    arousal: Mapped[float | None] = mapped_column(Float, comment="arousal 0..1 when speech was found; "
                                                                 "arousal_source says whose")
    arousal_source: Mapped[str | None] = mapped_column(
        String(16), comment="voice_net (a dimensional voice net's arousal) | prosody (energy, pitch, rate)")
    voice_valence: Mapped[float | None] = mapped_column(
        Float, comment="a dimensional voice net's valence over the speech, -1 unpleasant .. 1 pleasant")
    voice_arousal: Mapped[float | None] = mapped_column(
        Float, comment="a dimensional voice net's arousal over the speech, 0 calm .. 1 excited")
    voice_dominance: Mapped[float | None] = mapped_column(
        Float, comment="a dimensional voice net's dominance over the speech, 0 .. 1, where it answers one")
    word_valence: Mapped[float | None] = mapped_column(
        Float, comment="valence of the words said in the segment, -1 unpleasant .. 1 pleasant (CALLSTREAM_WORDS)")
    speech_ratio: Mapped[float | None] = mapped_column(Float)
    media: Mapped[str | None] = mapped_column(String(8), comment="av | audio | video | none (a gap); NULL before v5")
    video_ms: Mapped[int | None] = mapped_column(Integer, comment="ms of the cell with the participant's video")
    audio_ms: Mapped[int | None] = mapped_column(Integer, comment="ms of the cell with the participant's audio")
    model_name: Mapped[str] = mapped_column(String(128))
    chunk_seq: Mapped[int] = mapped_column(Integer, comment="a chunk that contributed (the first by seq)")
    evidence: Mapped[dict[str, Any] | None] = mapped_column(
        JSONB, comment="what drove the label: face frames and top classes, voice cues or top classes, fusion "
                       "weights, a one-line summary")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SegmentPiece(Base):
    """What one chunk saw of one participant in one grid cell, in sums that merge (shared.fusion.Evidence).
    Keyed by the chunk's place in its stream, so a redelivered chunk replaces its own pieces."""

    __tablename__ = "segment_pieces"
    __table_args__ = {"comment": "what each chunk saw of a participant in a grid cell; emotion_segments merges them"}

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    participant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    cell_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    stream: Mapped[str] = mapped_column(String(140), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(128))
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    video_ms: Mapped[int] = mapped_column(Integer)
    audio_ms: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer)
    faces: Mapped[int] = mapped_column(Integer)
    face_weight: Mapped[float] = mapped_column(Float)
    face_probs: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    speech_ratio: Mapped[float] = mapped_column(Float)
    arousal: Mapped[float | None] = mapped_column(Float)
    voice_probs: Mapped[list[float] | None] = mapped_column(
        ARRAY(Float), comment="the voice-emotion net's DFEW distribution over the piece's speech")
    voice_cues: Mapped[list[float] | None] = mapped_column(
        ARRAY(Float), comment="energy, pitch variability, rate z-scores behind the arousal")
    voice_dims: Mapped[list[float | None] | None] = mapped_column(
        ARRAY(Float), comment="a dimensional voice net's valence, arousal, dominance over the piece's speech")
    word_ms: Mapped[int] = mapped_column(Integer, server_default="0", comment="time of the words said in the piece")
    word_valence: Mapped[float | None] = mapped_column(Float, comment="their valence, -1 .. 1")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChunkPiece:
    """Keyed by the chunk that measured it (call, participant, chunk stream and seq) and where it starts:
    a redelivered chunk replaces its own pieces and nobody else's."""

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    participant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    stream: Mapped[str] = mapped_column(String(140), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    end_ms: Mapped[int] = mapped_column(BigInteger)


class Utterance(ChunkPiece, Base):
    """What a participant said, an utterance at a time, as each chunk heard it (CALLSTREAM_WORDS). Text and
    words are personal data: NULL unless CALLSTREAM_TRANSCRIPTS keeps them, readable by the role
    callstream_transcripts only; callstream_analyst reads the other columns. The view `utterances` joins
    an utterance that a chunk boundary cut (open_end, then open_start)."""

    __tablename__ = "utterance_pieces"
    __table_args__ = {"comment": "utterances as each chunk heard them; view utterances joins those a chunk cut"}

    role: Mapped[str] = mapped_column(String(16))
    words_model: Mapped[str] = mapped_column(String(128), comment="the words model's name/version")
    word_count: Mapped[int] = mapped_column(Integer)
    valence: Mapped[float] = mapped_column(Float, comment="-1 unpleasant .. 1 pleasant (VADER's compound score)")
    text: Mapped[str | None] = mapped_column(Text, comment="as CALLSTREAM_TRANSCRIPTS keeps it; NULL: none")
    words: Mapped[list[list[Any]] | None] = mapped_column(JSONB, comment="[start_ms, end_ms, word] each; NULL: none")
    open_start: Mapped[bool] = mapped_column(Boolean, comment="may continue the previous chunk's last utterance")
    open_end: Mapped[bool] = mapped_column(Boolean, comment="may continue in the next chunk")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SpeechActivity(ChunkPiece, Base):
    """Talk of participants whose emotions are not analysed (CALLSTREAM_SPEECH_ACTIVITY_ROLES): a row per
    piece of their audio a chunk measured. The views talk_cells and participant_talk put it beside the
    analysed participants' talk, so overlap is seen between both."""

    __tablename__ = "speech_activity"
    __table_args__ = {"comment": "speech measured without emotion analysis, a row per chunk's piece of a cell"}

    cell_ms: Mapped[int] = mapped_column(BigInteger, comment="the segment grid cell the piece belongs to")
    role: Mapped[str] = mapped_column(String(16))
    audio_ms: Mapped[int] = mapped_column(Integer, comment="audio of the piece")
    speech_ms: Mapped[int] = mapped_column(Integer, comment="of it, what the VAD called speech")
    min_speech_ratio: Mapped[float] = mapped_column(Float, comment="share of speech that makes a cell talk")
    speech_model: Mapped[str] = mapped_column(String(128), comment="the speech model's version")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


ROLE_COMMENT = "primary | shadow | other (no worker writes for it now), as the last worker to start said"


class ServedModel(Base):
    """The model versions workers write rows for, and which is the primary: the analyst views read the
    primary's rows (a shadow's sit beside them in emotion_segments)."""

    __tablename__ = "served_models"
    __table_args__ = (CheckConstraint("role IN ('primary', 'shadow', 'other')", name="served_models_role"),
                      {"comment": "the model versions workers write rows for; the analyst views read the primary's"})

    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), comment=ROLE_COMMENT)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Alert(Base):
    """A live alert: the first window of a call where a rule held. Once per call and rule; published to
    the alerts topic after its chunk commits (published_at stays NULL until the broker has it)."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("call_id", "rule", name="alerts_once"),
                      Index("alerts_unpublished", "fired_at", postgresql_where=text("published_at IS NULL")),
                      {"comment": "live alerts: the first window of a call where a rule held; published_at once on "
                                  "the topic"})

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(128))
    rule: Mapped[str] = mapped_column(String(64))
    participant_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    window_start_ms: Mapped[int] = mapped_column(BigInteger)
    window_end_ms: Mapped[int] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)
    model_version: Mapped[str] = mapped_column(String(128))
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
