"""Versioned schema migrations, applied in order under an advisory lock (many workers may start at once)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

LOCK_KEY = 0x63616C6C  # "call"

VIEWS = """
CREATE OR REPLACE VIEW emotion_timeline AS
SELECT s.call_id, s.track, s.start_ms, s.end_ms,
       s.start_ms / 1000.0 AS start_s, (s.end_ms - s.start_ms) / 1000.0 AS seconds,
       c.started_at + s.start_ms * interval '1 millisecond' AS at,
       s.label, s.confidence, s.neutral, s.happy, s.sad, s.angry, s.fear, s.disgust, s.surprise,
       s.face_found, s.speech_found, s.arousal, s.model_name, s.model_version
FROM emotion_segments s LEFT JOIN calls c USING (call_id);

CREATE OR REPLACE VIEW call_track_summary AS
SELECT call_id, track, model_version,
       count(*) AS segments,
       sum(end_ms - start_ms) / 1000.0 AS seconds,
       sum(CASE WHEN label IS NOT NULL THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS observed_seconds,
       sum(CASE WHEN label = 'neutral' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS neutral_seconds,
       sum(CASE WHEN label = 'happy' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS happy_seconds,
       sum(CASE WHEN label = 'sad' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS sad_seconds,
       sum(CASE WHEN label = 'angry' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS angry_seconds,
       sum(CASE WHEN label = 'fear' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS fear_seconds,
       sum(CASE WHEN label = 'disgust' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS disgust_seconds,
       sum(CASE WHEN label = 'surprise' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS surprise_seconds,
       mode() WITHIN GROUP (ORDER BY label) FILTER (WHERE label IS NOT NULL) AS dominant_label,
       avg(arousal) AS mean_arousal,
       avg(CASE WHEN face_found THEN 1.0 ELSE 0.0 END) AS face_coverage,
       avg(CASE WHEN speech_found THEN 1.0 ELSE 0.0 END) AS speech_coverage
FROM emotion_segments GROUP BY call_id, track, model_version;

CREATE OR REPLACE VIEW call_summary AS
WITH latest AS (
    SELECT DISTINCT ON (call_id, seq) call_id, seq, status
    FROM chunks WHERE call_id IS NOT NULL AND seq IS NOT NULL
    ORDER BY call_id, seq, processed_at DESC
)
SELECT c.call_id, c.started_at, c.layout, c.last_seq,
       count(l.seq) FILTER (WHERE l.status = 'done') AS chunks_done,
       count(l.seq) FILTER (WHERE l.status = 'failed') AS chunks_failed,
       CASE WHEN c.last_seq IS NOT NULL
                 AND count(l.seq) FILTER (WHERE l.status = 'done') = c.last_seq + 1 THEN 'complete'
            WHEN c.last_seq IS NOT NULL
                 AND count(l.seq) = c.last_seq + 1 THEN 'complete_with_failures'
            ELSE 'in_progress' END AS status,
       (SELECT max(end_ms) / 1000.0 FROM emotion_segments s WHERE s.call_id = c.call_id) AS analysed_until_s
FROM calls c LEFT JOIN latest l USING (call_id)
GROUP BY c.call_id, c.started_at, c.layout, c.last_seq;
"""


CALL_SUMMARY_V3 = """
DROP VIEW IF EXISTS call_summary;
CREATE VIEW call_summary AS
WITH latest AS (
    SELECT DISTINCT ON (call_id, seq) call_id, seq, status
    FROM chunks WHERE call_id IS NOT NULL AND seq IS NOT NULL
    ORDER BY call_id, seq, processed_at DESC
)
SELECT c.call_id, c.started_at, c.layout, c.last_seq,
       count(l.seq) FILTER (WHERE l.status = 'done') AS chunks_done,
       count(l.seq) FILTER (WHERE l.status = 'failed') AS chunks_failed,
       count(l.seq) FILTER (WHERE l.seq > c.last_seq) AS chunks_past_end,
       CASE WHEN c.last_seq IS NOT NULL
                 AND count(l.seq) FILTER (WHERE l.status = 'done' AND l.seq <= c.last_seq) = c.last_seq + 1
                 THEN 'complete'
            WHEN c.last_seq IS NOT NULL
                 AND count(l.seq) FILTER (WHERE l.seq <= c.last_seq) = c.last_seq + 1
                 THEN 'complete_with_failures'
            ELSE 'in_progress' END AS status,
       (SELECT max(end_ms) / 1000.0 FROM emotion_segments s WHERE s.call_id = c.call_id) AS analysed_until_s
FROM calls c LEFT JOIN latest l USING (call_id)
GROUP BY c.call_id, c.started_at, c.layout, c.last_seq;
"""


# Frozen: the DDL the models produced when migration 1 was written. Later changes are later migrations,
# so a database migrated last month and one migrated today end up the same (tests/integration/test_migrations).
TABLES_V1 = """
CREATE TABLE IF NOT EXISTS calls (
    call_id VARCHAR(128) NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE,
    layout VARCHAR(16),
    last_seq INTEGER,
    first_seen_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (call_id)
);
COMMENT ON COLUMN calls.last_seq IS 'seq of the end-of-call chunk, once seen';
CREATE TABLE IF NOT EXISTS chunks (
    id BIGSERIAL NOT NULL,
    topic VARCHAR(255) NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    call_id VARCHAR(128),
    seq INTEGER,
    status VARCHAR(16) NOT NULL,
    error_reason VARCHAR(64),
    error_detail TEXT,
    start_ms BIGINT,
    duration_ms BIGINT,
    size_bytes BIGINT,
    claim_check TEXT,
    segments INTEGER,
    published_at TIMESTAMP WITH TIME ZONE,
    fetch_ms FLOAT,
    decode_ms FLOAT,
    inference_ms FLOAT,
    db_ms FLOAT,
    worker VARCHAR(255),
    attempts INTEGER NOT NULL,
    processed_at TIMESTAMP WITH TIME ZONE DEFAULT clock_timestamp() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT chunks_message_key UNIQUE (topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS chunks_call_seq ON chunks (call_id, seq);
COMMENT ON COLUMN chunks.status IS 'done | failed';
COMMENT ON COLUMN chunks.db_ms IS 'time to commit the rows, measured up to the commit';
COMMENT ON COLUMN chunks.processed_at IS 'when the chunk''s rows were written, just before commit';
CREATE TABLE IF NOT EXISTS emotion_segments (
    call_id VARCHAR(128) NOT NULL,
    track VARCHAR(16) NOT NULL,
    start_ms BIGINT NOT NULL,
    model_version VARCHAR(128) NOT NULL,
    end_ms BIGINT NOT NULL,
    neutral FLOAT,
    happy FLOAT,
    sad FLOAT,
    angry FLOAT,
    fear FLOAT,
    disgust FLOAT,
    surprise FLOAT,
    label VARCHAR(16),
    confidence FLOAT NOT NULL,
    face_found BOOLEAN NOT NULL,
    speech_found BOOLEAN NOT NULL,
    face_score FLOAT,
    arousal FLOAT,
    speech_ratio FLOAT,
    model_name VARCHAR(128) NOT NULL,
    chunk_seq INTEGER NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (call_id, track, start_ms, model_version)
);
COMMENT ON COLUMN emotion_segments.track IS 'agent | customer';
COMMENT ON COLUMN emotion_segments.face_score IS 'mean face-detection confidence';
COMMENT ON COLUMN emotion_segments.arousal IS 'prosodic arousal 0..1 when speech was found';
"""


def _v1_tables(conn: Connection) -> None:
    conn.exec_driver_sql(TABLES_V1)


def _v2_views(conn: Connection) -> None:
    conn.exec_driver_sql(VIEWS)


def _v3_completion(conn: Connection) -> None:
    # Fixed DDL (not create_all): a database migrated before this release must end up the same.
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS note text")
    conn.exec_driver_sql("COMMENT ON COLUMN chunks.note IS "
                         "'what was adjusted on a done chunk, e.g. a clamped duration'")
    conn.exec_driver_sql(CALL_SUMMARY_V3)


PRIVACY_V4 = """
CREATE TABLE IF NOT EXISTS erasures (
    call_id varchar(128) NOT NULL,
    track varchar(64) NOT NULL DEFAULT '*',
    erased_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, track)
);
COMMENT ON TABLE erasures IS 'tombstones of callstream forget: chunks of these calls (track * = all) are refused';
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'callstream_writer') THEN
        CREATE ROLE callstream_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'callstream_analyst') THEN
        CREATE ROLE callstream_analyst NOLOGIN;
    END IF;
END $$;
GRANT SELECT, INSERT, UPDATE, DELETE ON calls, chunks, emotion_segments, erasures, schema_migrations
    TO callstream_writer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO callstream_writer;
GRANT SELECT ON emotion_timeline, call_track_summary, call_summary, calls, emotion_segments
    TO callstream_analyst;
REVOKE ALL ON chunks, erasures, schema_migrations FROM callstream_analyst;
COMMENT ON COLUMN chunks.status IS 'done | failed | erased';
COMMENT ON COLUMN calls.last_seq IS 'highest seq marked end-of-call, once seen';
"""


def _v4_privacy(conn: Connection) -> None:
    conn.exec_driver_sql(PRIVACY_V4)


PARTICIPANTS_V5 = """
ALTER TABLE emotion_segments
    ADD COLUMN IF NOT EXISTS participant_id varchar(128),
    ADD COLUMN IF NOT EXISTS role varchar(16),
    ADD COLUMN IF NOT EXISTS media varchar(8),
    ADD COLUMN IF NOT EXISTS video_ms integer,
    ADD COLUMN IF NOT EXISTS audio_ms integer;
UPDATE emotion_segments SET participant_id = track, role = track WHERE participant_id IS NULL;
ALTER TABLE emotion_segments ALTER COLUMN participant_id SET NOT NULL, ALTER COLUMN role SET NOT NULL;
ALTER TABLE emotion_segments DROP CONSTRAINT emotion_segments_pkey;
ALTER TABLE emotion_segments ADD PRIMARY KEY (call_id, participant_id, start_ms, model_version);
COMMENT ON COLUMN emotion_segments.participant_id IS 'recorder''s id; agent | customer for v1 layouts';
COMMENT ON COLUMN emotion_segments.role IS 'customer | agent | supervisor | other';
COMMENT ON COLUMN emotion_segments.track IS 'deprecated (v1): the role';
COMMENT ON COLUMN emotion_segments.media IS 'av | audio | video | none (a gap); NULL before v5';
COMMENT ON COLUMN emotion_segments.video_ms IS 'ms of the cell with the participant''s video';
COMMENT ON COLUMN emotion_segments.audio_ms IS 'ms of the cell with the participant''s audio';
COMMENT ON COLUMN emotion_segments.chunk_seq IS 'a chunk that contributed (the first by seq)';

CREATE TABLE IF NOT EXISTS segment_pieces (
    call_id varchar(128) NOT NULL,
    participant_id varchar(128) NOT NULL,
    model_version varchar(128) NOT NULL,
    cell_ms bigint NOT NULL,
    stream varchar(140) NOT NULL,
    seq integer NOT NULL,
    role varchar(16) NOT NULL,
    model_name varchar(128) NOT NULL,
    start_ms bigint NOT NULL,
    end_ms bigint NOT NULL,
    video_ms integer NOT NULL,
    audio_ms integer NOT NULL,
    frames integer NOT NULL,
    faces integer NOT NULL,
    face_weight float NOT NULL,
    face_probs float[],
    speech_ratio float NOT NULL,
    arousal float,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, participant_id, model_version, cell_ms, stream, seq)
);
COMMENT ON TABLE segment_pieces IS 'what each chunk saw of a participant in a grid cell; emotion_segments merges them';

ALTER TABLE chunks ADD COLUMN IF NOT EXISTS stream varchar(140) NOT NULL DEFAULT '',
                   ADD COLUMN IF NOT EXISTS end_of_call boolean;
COMMENT ON COLUMN chunks.stream IS 'participant-id/media of a per-participant chunk; empty for whole-call chunks';
UPDATE chunks k SET end_of_call = (k.seq = c.last_seq) FROM calls c WHERE c.call_id = k.call_id AND k.seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS chunks_call_stream_seq ON chunks (call_id, stream, seq);

ALTER TABLE erasures ALTER COLUMN track TYPE varchar(128);
COMMENT ON COLUMN erasures.track IS 'participant id, or * for the whole call';

DROP VIEW IF EXISTS call_summary;
DROP VIEW IF EXISTS call_track_summary;
DROP VIEW IF EXISTS emotion_timeline;
CREATE VIEW emotion_timeline AS
SELECT s.call_id, s.participant_id, s.role, s.track, s.start_ms, s.end_ms,
       s.start_ms / 1000.0 AS start_s, (s.end_ms - s.start_ms) / 1000.0 AS seconds,
       c.started_at + s.start_ms * interval '1 millisecond' AS at,
       s.label, s.confidence, s.neutral, s.happy, s.sad, s.angry, s.fear, s.disgust, s.surprise,
       s.face_found, s.speech_found, s.arousal, s.media, s.video_ms, s.audio_ms, s.model_name, s.model_version
FROM emotion_segments s LEFT JOIN calls c USING (call_id);

CREATE VIEW call_participant_summary AS
SELECT call_id, participant_id, min(role) AS role, model_version,
       count(*) AS segments,
       min(start_ms) / 1000.0 AS from_s,
       max(end_ms) / 1000.0 AS until_s,
       sum(end_ms - start_ms) / 1000.0 AS seconds,
       sum(CASE WHEN media = 'none' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS no_media_seconds,
       sum(CASE WHEN label IS NOT NULL THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS observed_seconds,
       sum(CASE WHEN label = 'neutral' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS neutral_seconds,
       sum(CASE WHEN label = 'happy' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS happy_seconds,
       sum(CASE WHEN label = 'sad' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS sad_seconds,
       sum(CASE WHEN label = 'angry' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS angry_seconds,
       sum(CASE WHEN label = 'fear' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS fear_seconds,
       sum(CASE WHEN label = 'disgust' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS disgust_seconds,
       sum(CASE WHEN label = 'surprise' THEN end_ms - start_ms ELSE 0 END) / 1000.0 AS surprise_seconds,
       mode() WITHIN GROUP (ORDER BY label) FILTER (WHERE label IS NOT NULL) AS dominant_label,
       avg(arousal) AS mean_arousal,
       avg(CASE WHEN face_found THEN 1.0 ELSE 0.0 END) AS face_coverage,
       avg(CASE WHEN speech_found THEN 1.0 ELSE 0.0 END) AS speech_coverage
FROM emotion_segments GROUP BY call_id, participant_id, model_version;

-- The v1 name, kept for existing queries: one row per participant, track being the participant id.
CREATE VIEW call_track_summary AS
SELECT call_id, participant_id AS track, model_version, segments, seconds, observed_seconds, neutral_seconds,
       happy_seconds, sad_seconds, angry_seconds, fear_seconds, disgust_seconds, surprise_seconds,
       dominant_label, mean_arousal, face_coverage, speech_coverage, participant_id, role, no_media_seconds
FROM call_participant_summary;

-- A call is complete once every chunk stream it has (one per participant and media, or the
-- whole-call stream of v1 chunks) has an end-of-call seq and seqs 0..end are all settled.
CREATE VIEW call_stream_summary AS
WITH latest AS (
    SELECT DISTINCT ON (call_id, stream, seq) call_id, stream, seq, status
    FROM chunks WHERE call_id IS NOT NULL AND seq IS NOT NULL
    ORDER BY call_id, stream, seq, processed_at DESC
), ends AS (
    SELECT call_id, stream, max(seq) FILTER (WHERE end_of_call) AS last_seq
    FROM chunks WHERE call_id IS NOT NULL AND seq IS NOT NULL GROUP BY call_id, stream
)
SELECT l.call_id, l.stream, e.last_seq,
       count(*) FILTER (WHERE l.status = 'done') AS chunks_done,
       count(*) FILTER (WHERE l.status = 'failed') AS chunks_failed,
       count(*) FILTER (WHERE l.seq > e.last_seq) AS chunks_past_end,
       CASE WHEN e.last_seq IS NOT NULL
                 AND count(*) FILTER (WHERE l.status = 'done' AND l.seq <= e.last_seq) = e.last_seq + 1
                 THEN 'complete'
            WHEN e.last_seq IS NOT NULL
                 AND count(*) FILTER (WHERE l.seq <= e.last_seq) = e.last_seq + 1
                 THEN 'complete_with_failures'
            ELSE 'in_progress' END AS status
FROM latest l JOIN ends e USING (call_id, stream)
GROUP BY l.call_id, l.stream, e.last_seq;

CREATE VIEW call_summary AS
SELECT c.call_id, c.started_at, c.layout, c.last_seq,
       coalesce(sum(st.chunks_done), 0) AS chunks_done,
       coalesce(sum(st.chunks_failed), 0) AS chunks_failed,
       coalesce(sum(st.chunks_past_end), 0) AS chunks_past_end,
       CASE WHEN count(st.stream) = 0 THEN 'in_progress'
            WHEN bool_and(st.status = 'complete') THEN 'complete'
            WHEN bool_and(st.status <> 'in_progress') THEN 'complete_with_failures'
            ELSE 'in_progress' END AS status,
       count(st.stream) AS streams,
       (SELECT count(DISTINCT participant_id) FROM emotion_segments s WHERE s.call_id = c.call_id) AS participants,
       (SELECT max(end_ms) / 1000.0 FROM emotion_segments s WHERE s.call_id = c.call_id) AS analysed_until_s
FROM calls c LEFT JOIN call_stream_summary st USING (call_id)
GROUP BY c.call_id, c.started_at, c.layout, c.last_seq;

GRANT SELECT, INSERT, UPDATE, DELETE ON segment_pieces TO callstream_writer;
GRANT SELECT ON emotion_timeline, call_participant_summary, call_track_summary, call_summary, call_stream_summary
    TO callstream_analyst;
"""


def _v5_participants(conn: Connection) -> None:
    conn.exec_driver_sql(PARTICIPANTS_V5)


ALERTS_V6 = """
CREATE TABLE IF NOT EXISTS alerts (
    id bigserial NOT NULL,
    call_id varchar(128) NOT NULL,
    rule varchar(64) NOT NULL,
    participant_id varchar(128) NOT NULL,
    role varchar(16) NOT NULL,
    window_start_ms bigint NOT NULL,
    window_end_ms bigint NOT NULL,
    details jsonb NOT NULL,
    model_version varchar(128) NOT NULL,
    fired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    PRIMARY KEY (id),
    CONSTRAINT alerts_once UNIQUE (call_id, rule)
);
CREATE INDEX IF NOT EXISTS alerts_unpublished ON alerts (fired_at) WHERE published_at IS NULL;
COMMENT ON TABLE alerts IS 'live alerts: the first window of a call where a rule held; published_at once on the topic';
GRANT SELECT, INSERT, UPDATE, DELETE ON alerts TO callstream_writer;
GRANT SELECT ON alerts TO callstream_analyst;
"""


def _v6_alerts(conn: Connection) -> None:
    conn.exec_driver_sql(ALERTS_V6)


PROBS = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
MODELS_V7 = f"""
ALTER TABLE segment_pieces ADD COLUMN IF NOT EXISTS voice_probs float[],
                           ADD COLUMN IF NOT EXISTS voice_cues float[];
COMMENT ON COLUMN segment_pieces.voice_probs IS 'the voice-emotion net''s DFEW distribution over the piece''s speech';
COMMENT ON COLUMN segment_pieces.voice_cues IS 'energy, pitch variability, rate z-scores behind the arousal';
ALTER TABLE emotion_segments ADD COLUMN IF NOT EXISTS evidence jsonb;
COMMENT ON COLUMN emotion_segments.evidence IS 'what drove the label: face frames and top classes, voice cues or '
    'top classes, fusion weights, a one-line summary';
-- The same view, with the evidence at the end (CREATE OR REPLACE may only append columns).
CREATE OR REPLACE VIEW emotion_timeline AS
SELECT s.call_id, s.participant_id, s.role, s.track, s.start_ms, s.end_ms,
       s.start_ms / 1000.0 AS start_s, (s.end_ms - s.start_ms) / 1000.0 AS seconds,
       c.started_at + s.start_ms * interval '1 millisecond' AS at,
       s.label, s.confidence, s.neutral, s.happy, s.sad, s.angry, s.fear, s.disgust, s.surprise,
       s.face_found, s.speech_found, s.arousal, s.media, s.video_ms, s.audio_ms, s.model_name, s.model_version,
       s.evidence
FROM emotion_segments s LEFT JOIN calls c USING (call_id);

-- Two model versions on the same segments (a shadow beside the primary): each pair once, a < b.
CREATE OR REPLACE VIEW model_comparison AS
SELECT a.call_id, a.participant_id, min(a.role) AS role,
       a.model_version AS model_version_a, b.model_version AS model_version_b,
       count(*) AS segments,
       count(*) FILTER (WHERE a.label IS NOT NULL AND b.label IS NOT NULL) AS labelled_by_both,
       count(*) FILTER (WHERE a.label IS NOT NULL AND b.label IS NULL) AS labelled_by_a_only,
       count(*) FILTER (WHERE a.label IS NULL AND b.label IS NOT NULL) AS labelled_by_b_only,
       avg(CASE WHEN a.label = b.label THEN 1.0 ELSE 0.0 END)
           FILTER (WHERE a.label IS NOT NULL AND b.label IS NOT NULL) AS label_agreement,
       avg(({" + ".join(f"abs(a.{c} - b.{c})" for c in PROBS)}) / 7.0) AS mean_abs_prob_diff,
       sum(a.end_ms - a.start_ms) FILTER (WHERE a.label IS NOT NULL AND a.label = b.label) / 1000.0
           AS agreeing_seconds
FROM emotion_segments a
JOIN emotion_segments b ON b.call_id = a.call_id AND b.participant_id = a.participant_id
                       AND b.start_ms = a.start_ms AND b.model_version > a.model_version
GROUP BY a.call_id, a.participant_id, a.model_version, b.model_version;
COMMENT ON VIEW model_comparison IS 'two model versions on the same segments: agreement, mean |p_a - p_b|';

-- Seconds per label, one row per (call, participant, model version, label): versions side by side.
CREATE OR REPLACE VIEW label_seconds AS
SELECT call_id, participant_id, min(role) AS role, model_version, label,
       count(*) AS segments, sum(end_ms - start_ms) / 1000.0 AS seconds
FROM emotion_segments WHERE label IS NOT NULL
GROUP BY call_id, participant_id, model_version, label;
GRANT SELECT ON model_comparison, label_seconds TO callstream_analyst;
"""


def _v7_models(conn: Connection) -> None:
    conn.exec_driver_sql(MODELS_V7)


REFUSED_V8 = """
UPDATE chunks SET status = 'refused', error_reason = 'call_erased' WHERE status = 'erased';
COMMENT ON COLUMN chunks.status IS 'done | failed | refused (error_reason says why: call_erased)';
CREATE INDEX IF NOT EXISTS chunks_refused ON chunks (call_id) WHERE status = 'refused';
"""


def _v8_refused(conn: Connection) -> None:
    conn.exec_driver_sql(REFUSED_V8)


UNSENT_V9 = """
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz;
-- Before v9 the dead letter went out before the failed row was written: every such row was sent.
UPDATE chunks SET dead_lettered_at = processed_at WHERE status = 'failed' AND dead_lettered_at IS NULL;
COMMENT ON COLUMN chunks.dead_lettered_at IS 'when a failed chunk''s dead letter was acknowledged by the broker; '
    'NULL while it is still to be sent (the row is written first)';
CREATE INDEX IF NOT EXISTS chunks_dead_letter_unsent ON chunks (topic, partition)
    WHERE status = 'failed' AND dead_lettered_at IS NULL;
"""


def _v9_unsent(conn: Connection) -> None:
    conn.exec_driver_sql(UNSENT_V9)


MIGRATIONS = [(1, "tables: calls, chunks ledger, emotion_segments", _v1_tables),
              (2, "views: emotion_timeline, call_track_summary, call_summary", _v2_views),
              (3, "chunks.note; call_summary: complete once seqs 0..end are settled, later seqs counted",
               _v3_completion),
              (4, "erasures (tombstones); roles callstream_writer and callstream_analyst (views, not the ledger)",
               _v4_privacy),
              (5, "participants: emotion_segments by participant id and role, media coverage; segment_pieces; "
                  "chunk streams and per-stream completion; call_participant_summary", _v5_participants),
              (6, "alerts: live alert firings, once per call and rule, with their publication time", _v6_alerts),
              (7, "segment_pieces.voice_probs and voice_cues; emotion_segments.evidence (in emotion_timeline); "
                  "views model_comparison and label_seconds (shadow models)",
               _v7_models),
              (8, "chunks.status 'refused' with error_reason call_erased (was 'erased'), keeping the call id so "
                  "timeline and status can say a replay was refused", _v8_refused),
              (9, "chunks.dead_lettered_at: a failed row is written before its dead letter is sent, and "
                  "marked once the broker has it", _v9_unsent)]


def migrate(conn: Connection) -> list[int]:
    """Apply what is missing; returns the versions applied now. Call inside a transaction."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    conn.execute(text("CREATE TABLE IF NOT EXISTS schema_migrations ("
                      "version integer PRIMARY KEY, description text NOT NULL, "
                      "applied_at timestamptz NOT NULL DEFAULT now())"))
    done = {r[0] for r in conn.execute(text("SELECT version FROM schema_migrations"))}
    applied = []
    for version, description, step in MIGRATIONS:
        if version in done:
            continue
        step(conn)
        conn.execute(text("INSERT INTO schema_migrations (version, description) VALUES (:v, :d)"),
                     {"v": version, "d": description})
        applied.append(version)
    return applied
