-- The schema a database migrated by callstream's hand-written migrations 1..8 had (pg_dump --schema-only,
-- then the schema_migrations rows): databases deployed before Alembic, stamped by `db upgrade`.
--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: alerts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alerts (
    id bigint NOT NULL,
    call_id character varying(128) NOT NULL,
    rule character varying(64) NOT NULL,
    participant_id character varying(128) NOT NULL,
    role character varying(16) NOT NULL,
    window_start_ms bigint NOT NULL,
    window_end_ms bigint NOT NULL,
    details jsonb NOT NULL,
    model_version character varying(128) NOT NULL,
    fired_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    published_at timestamp with time zone
);


--
-- Name: TABLE alerts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.alerts IS 'live alerts: the first window of a call where a rule held; published_at once on the topic';


--
-- Name: alerts_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.alerts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: alerts_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.alerts_id_seq OWNED BY public.alerts.id;


--
-- Name: emotion_segments; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.emotion_segments (
    call_id character varying(128) NOT NULL,
    track character varying(16) NOT NULL,
    start_ms bigint NOT NULL,
    model_version character varying(128) NOT NULL,
    end_ms bigint NOT NULL,
    neutral double precision,
    happy double precision,
    sad double precision,
    angry double precision,
    fear double precision,
    disgust double precision,
    surprise double precision,
    label character varying(16),
    confidence double precision NOT NULL,
    face_found boolean NOT NULL,
    speech_found boolean NOT NULL,
    face_score double precision,
    arousal double precision,
    speech_ratio double precision,
    model_name character varying(128) NOT NULL,
    chunk_seq integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    participant_id character varying(128) NOT NULL,
    role character varying(16) NOT NULL,
    media character varying(8),
    video_ms integer,
    audio_ms integer,
    evidence jsonb
);


--
-- Name: COLUMN emotion_segments.track; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.track IS 'deprecated (v1): the role';


--
-- Name: COLUMN emotion_segments.face_score; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.face_score IS 'mean face-detection confidence';


--
-- Name: COLUMN emotion_segments.arousal; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.arousal IS 'prosodic arousal 0..1 when speech was found';


--
-- Name: COLUMN emotion_segments.chunk_seq; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.chunk_seq IS 'a chunk that contributed (the first by seq)';


--
-- Name: COLUMN emotion_segments.participant_id; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.participant_id IS 'recorder''s id; agent | customer for v1 layouts';


--
-- Name: COLUMN emotion_segments.role; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.role IS 'customer | agent | supervisor | other';


--
-- Name: COLUMN emotion_segments.media; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.media IS 'av | audio | video | none (a gap); NULL before v5';


--
-- Name: COLUMN emotion_segments.video_ms; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.video_ms IS 'ms of the cell with the participant''s video';


--
-- Name: COLUMN emotion_segments.audio_ms; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.audio_ms IS 'ms of the cell with the participant''s audio';


--
-- Name: COLUMN emotion_segments.evidence; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.emotion_segments.evidence IS 'what drove the label: face frames and top classes, voice cues or top classes, fusion weights, a one-line summary';


--
-- Name: call_participant_summary; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.call_participant_summary AS
 SELECT call_id,
    participant_id,
    min((role)::text) AS role,
    model_version,
    count(*) AS segments,
    ((min(start_ms))::numeric / 1000.0) AS from_s,
    ((max(end_ms))::numeric / 1000.0) AS until_s,
    (sum((end_ms - start_ms)) / 1000.0) AS seconds,
    (sum(
        CASE
            WHEN ((media)::text = 'none'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS no_media_seconds,
    (sum(
        CASE
            WHEN (label IS NOT NULL) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS observed_seconds,
    (sum(
        CASE
            WHEN ((label)::text = 'neutral'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS neutral_seconds,
    (sum(
        CASE
            WHEN ((label)::text = 'happy'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS happy_seconds,
    (sum(
        CASE
            WHEN ((label)::text = 'sad'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS sad_seconds,
    (sum(
        CASE
            WHEN ((label)::text = 'angry'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS angry_seconds,
    (sum(
        CASE
            WHEN ((label)::text = 'fear'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS fear_seconds,
    (sum(
        CASE
            WHEN ((label)::text = 'disgust'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS disgust_seconds,
    (sum(
        CASE
            WHEN ((label)::text = 'surprise'::text) THEN (end_ms - start_ms)
            ELSE (0)::bigint
        END) / 1000.0) AS surprise_seconds,
    mode() WITHIN GROUP (ORDER BY label) FILTER (WHERE (label IS NOT NULL)) AS dominant_label,
    avg(arousal) AS mean_arousal,
    avg(
        CASE
            WHEN face_found THEN 1.0
            ELSE 0.0
        END) AS face_coverage,
    avg(
        CASE
            WHEN speech_found THEN 1.0
            ELSE 0.0
        END) AS speech_coverage
   FROM public.emotion_segments
  GROUP BY call_id, participant_id, model_version;


--
-- Name: chunks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.chunks (
    id bigint NOT NULL,
    topic character varying(255) NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    call_id character varying(128),
    seq integer,
    status character varying(16) NOT NULL,
    error_reason character varying(64),
    error_detail text,
    start_ms bigint,
    duration_ms bigint,
    size_bytes bigint,
    claim_check text,
    segments integer,
    published_at timestamp with time zone,
    fetch_ms double precision,
    decode_ms double precision,
    inference_ms double precision,
    db_ms double precision,
    worker character varying(255),
    attempts integer NOT NULL,
    processed_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    note text,
    stream character varying(140) DEFAULT ''::character varying NOT NULL,
    end_of_call boolean
);


--
-- Name: COLUMN chunks.status; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.chunks.status IS 'done | failed | refused (error_reason says why: call_erased)';


--
-- Name: COLUMN chunks.db_ms; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.chunks.db_ms IS 'time to commit the rows, measured up to the commit';


--
-- Name: COLUMN chunks.processed_at; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.chunks.processed_at IS 'when the chunk''s rows were written, just before commit';


--
-- Name: COLUMN chunks.note; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.chunks.note IS 'what was adjusted on a done chunk, e.g. a clamped duration';


--
-- Name: COLUMN chunks.stream; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.chunks.stream IS 'participant-id/media of a per-participant chunk; empty for whole-call chunks';


--
-- Name: call_stream_summary; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.call_stream_summary AS
 WITH latest AS (
         SELECT DISTINCT ON (chunks.call_id, chunks.stream, chunks.seq) chunks.call_id,
            chunks.stream,
            chunks.seq,
            chunks.status
           FROM public.chunks
          WHERE ((chunks.call_id IS NOT NULL) AND (chunks.seq IS NOT NULL))
          ORDER BY chunks.call_id, chunks.stream, chunks.seq, chunks.processed_at DESC
        ), ends AS (
         SELECT chunks.call_id,
            chunks.stream,
            max(chunks.seq) FILTER (WHERE chunks.end_of_call) AS last_seq
           FROM public.chunks
          WHERE ((chunks.call_id IS NOT NULL) AND (chunks.seq IS NOT NULL))
          GROUP BY chunks.call_id, chunks.stream
        )
 SELECT l.call_id,
    l.stream,
    e.last_seq,
    count(*) FILTER (WHERE ((l.status)::text = 'done'::text)) AS chunks_done,
    count(*) FILTER (WHERE ((l.status)::text = 'failed'::text)) AS chunks_failed,
    count(*) FILTER (WHERE (l.seq > e.last_seq)) AS chunks_past_end,
        CASE
            WHEN ((e.last_seq IS NOT NULL) AND (count(*) FILTER (WHERE (((l.status)::text = 'done'::text) AND (l.seq <= e.last_seq))) = (e.last_seq + 1))) THEN 'complete'::text
            WHEN ((e.last_seq IS NOT NULL) AND (count(*) FILTER (WHERE (l.seq <= e.last_seq)) = (e.last_seq + 1))) THEN 'complete_with_failures'::text
            ELSE 'in_progress'::text
        END AS status
   FROM (latest l
     JOIN ends e USING (call_id, stream))
  GROUP BY l.call_id, l.stream, e.last_seq;


--
-- Name: calls; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.calls (
    call_id character varying(128) NOT NULL,
    started_at timestamp with time zone,
    layout character varying(16),
    last_seq integer,
    first_seen_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: COLUMN calls.last_seq; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.calls.last_seq IS 'highest seq marked end-of-call, once seen';


--
-- Name: call_summary; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.call_summary AS
 SELECT c.call_id,
    c.started_at,
    c.layout,
    c.last_seq,
    COALESCE(sum(st.chunks_done), (0)::numeric) AS chunks_done,
    COALESCE(sum(st.chunks_failed), (0)::numeric) AS chunks_failed,
    COALESCE(sum(st.chunks_past_end), (0)::numeric) AS chunks_past_end,
        CASE
            WHEN (count(st.stream) = 0) THEN 'in_progress'::text
            WHEN bool_and((st.status = 'complete'::text)) THEN 'complete'::text
            WHEN bool_and((st.status <> 'in_progress'::text)) THEN 'complete_with_failures'::text
            ELSE 'in_progress'::text
        END AS status,
    count(st.stream) AS streams,
    ( SELECT count(DISTINCT s.participant_id) AS count
           FROM public.emotion_segments s
          WHERE ((s.call_id)::text = (c.call_id)::text)) AS participants,
    ( SELECT ((max(s.end_ms))::numeric / 1000.0)
           FROM public.emotion_segments s
          WHERE ((s.call_id)::text = (c.call_id)::text)) AS analysed_until_s
   FROM (public.calls c
     LEFT JOIN public.call_stream_summary st USING (call_id))
  GROUP BY c.call_id, c.started_at, c.layout, c.last_seq;


--
-- Name: call_track_summary; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.call_track_summary AS
 SELECT call_id,
    participant_id AS track,
    model_version,
    segments,
    seconds,
    observed_seconds,
    neutral_seconds,
    happy_seconds,
    sad_seconds,
    angry_seconds,
    fear_seconds,
    disgust_seconds,
    surprise_seconds,
    dominant_label,
    mean_arousal,
    face_coverage,
    speech_coverage,
    participant_id,
    role,
    no_media_seconds
   FROM public.call_participant_summary;


--
-- Name: chunks_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.chunks_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: chunks_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.chunks_id_seq OWNED BY public.chunks.id;


--
-- Name: emotion_timeline; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.emotion_timeline AS
 SELECT s.call_id,
    s.participant_id,
    s.role,
    s.track,
    s.start_ms,
    s.end_ms,
    ((s.start_ms)::numeric / 1000.0) AS start_s,
    (((s.end_ms - s.start_ms))::numeric / 1000.0) AS seconds,
    (c.started_at + ((s.start_ms)::double precision * '00:00:00.001'::interval)) AS at,
    s.label,
    s.confidence,
    s.neutral,
    s.happy,
    s.sad,
    s.angry,
    s.fear,
    s.disgust,
    s.surprise,
    s.face_found,
    s.speech_found,
    s.arousal,
    s.media,
    s.video_ms,
    s.audio_ms,
    s.model_name,
    s.model_version,
    s.evidence
   FROM (public.emotion_segments s
     LEFT JOIN public.calls c USING (call_id));


--
-- Name: erasures; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.erasures (
    call_id character varying(128) NOT NULL,
    track character varying(128) DEFAULT '*'::character varying NOT NULL,
    erased_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: TABLE erasures; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.erasures IS 'tombstones of callstream forget: chunks of these calls (track * = all) are refused';


--
-- Name: COLUMN erasures.track; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.erasures.track IS 'participant id, or * for the whole call';


--
-- Name: label_seconds; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.label_seconds AS
 SELECT call_id,
    participant_id,
    min((role)::text) AS role,
    model_version,
    label,
    count(*) AS segments,
    (sum((end_ms - start_ms)) / 1000.0) AS seconds
   FROM public.emotion_segments
  WHERE (label IS NOT NULL)
  GROUP BY call_id, participant_id, model_version, label;


--
-- Name: model_comparison; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.model_comparison AS
 SELECT a.call_id,
    a.participant_id,
    min((a.role)::text) AS role,
    a.model_version AS model_version_a,
    b.model_version AS model_version_b,
    count(*) AS segments,
    count(*) FILTER (WHERE ((a.label IS NOT NULL) AND (b.label IS NOT NULL))) AS labelled_by_both,
    count(*) FILTER (WHERE ((a.label IS NOT NULL) AND (b.label IS NULL))) AS labelled_by_a_only,
    count(*) FILTER (WHERE ((a.label IS NULL) AND (b.label IS NOT NULL))) AS labelled_by_b_only,
    avg(
        CASE
            WHEN ((a.label)::text = (b.label)::text) THEN 1.0
            ELSE 0.0
        END) FILTER (WHERE ((a.label IS NOT NULL) AND (b.label IS NOT NULL))) AS label_agreement,
    avg((((((((abs((a.neutral - b.neutral)) + abs((a.happy - b.happy))) + abs((a.sad - b.sad))) + abs((a.angry - b.angry))) + abs((a.fear - b.fear))) + abs((a.disgust - b.disgust))) + abs((a.surprise - b.surprise))) / (7.0)::double precision)) AS mean_abs_prob_diff,
    (sum((a.end_ms - a.start_ms)) FILTER (WHERE ((a.label IS NOT NULL) AND ((a.label)::text = (b.label)::text))) / 1000.0) AS agreeing_seconds
   FROM (public.emotion_segments a
     JOIN public.emotion_segments b ON ((((b.call_id)::text = (a.call_id)::text) AND ((b.participant_id)::text = (a.participant_id)::text) AND (b.start_ms = a.start_ms) AND ((b.model_version)::text > (a.model_version)::text))))
  GROUP BY a.call_id, a.participant_id, a.model_version, b.model_version;


--
-- Name: VIEW model_comparison; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON VIEW public.model_comparison IS 'two model versions on the same segments: agreement, mean |p_a - p_b|';


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    description text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: segment_pieces; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.segment_pieces (
    call_id character varying(128) NOT NULL,
    participant_id character varying(128) NOT NULL,
    model_version character varying(128) NOT NULL,
    cell_ms bigint NOT NULL,
    stream character varying(140) NOT NULL,
    seq integer NOT NULL,
    role character varying(16) NOT NULL,
    model_name character varying(128) NOT NULL,
    start_ms bigint NOT NULL,
    end_ms bigint NOT NULL,
    video_ms integer NOT NULL,
    audio_ms integer NOT NULL,
    frames integer NOT NULL,
    faces integer NOT NULL,
    face_weight double precision NOT NULL,
    face_probs double precision[],
    speech_ratio double precision NOT NULL,
    arousal double precision,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    voice_probs double precision[],
    voice_cues double precision[]
);


--
-- Name: TABLE segment_pieces; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.segment_pieces IS 'what each chunk saw of a participant in a grid cell; emotion_segments merges them';


--
-- Name: COLUMN segment_pieces.voice_probs; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.segment_pieces.voice_probs IS 'the voice-emotion net''s DFEW distribution over the piece''s speech';


--
-- Name: COLUMN segment_pieces.voice_cues; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.segment_pieces.voice_cues IS 'energy, pitch variability, rate z-scores behind the arousal';


--
-- Name: alerts id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alerts ALTER COLUMN id SET DEFAULT nextval('public.alerts_id_seq'::regclass);


--
-- Name: chunks id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.chunks ALTER COLUMN id SET DEFAULT nextval('public.chunks_id_seq'::regclass);


--
-- Name: alerts alerts_once; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alerts
    ADD CONSTRAINT alerts_once UNIQUE (call_id, rule);


--
-- Name: alerts alerts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alerts
    ADD CONSTRAINT alerts_pkey PRIMARY KEY (id);


--
-- Name: calls calls_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calls
    ADD CONSTRAINT calls_pkey PRIMARY KEY (call_id);


--
-- Name: chunks chunks_message_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.chunks
    ADD CONSTRAINT chunks_message_key UNIQUE (topic, partition, "offset");


--
-- Name: chunks chunks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.chunks
    ADD CONSTRAINT chunks_pkey PRIMARY KEY (id);


--
-- Name: emotion_segments emotion_segments_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.emotion_segments
    ADD CONSTRAINT emotion_segments_pkey PRIMARY KEY (call_id, participant_id, start_ms, model_version);


--
-- Name: erasures erasures_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.erasures
    ADD CONSTRAINT erasures_pkey PRIMARY KEY (call_id, track);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: segment_pieces segment_pieces_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.segment_pieces
    ADD CONSTRAINT segment_pieces_pkey PRIMARY KEY (call_id, participant_id, model_version, cell_ms, stream, seq);


--
-- Name: alerts_unpublished; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX alerts_unpublished ON public.alerts USING btree (fired_at) WHERE (published_at IS NULL);


--
-- Name: chunks_call_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX chunks_call_seq ON public.chunks USING btree (call_id, seq);


--
-- Name: chunks_call_stream_seq; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX chunks_call_stream_seq ON public.chunks USING btree (call_id, stream, seq);


--
-- Name: chunks_refused; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX chunks_refused ON public.chunks USING btree (call_id) WHERE ((status)::text = 'refused'::text);


--
-- Name: TABLE alerts; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.alerts TO callstream_writer;
GRANT SELECT ON TABLE public.alerts TO callstream_analyst;


--
-- Name: TABLE emotion_segments; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.emotion_segments TO callstream_writer;
GRANT SELECT ON TABLE public.emotion_segments TO callstream_analyst;


--
-- Name: TABLE call_participant_summary; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.call_participant_summary TO callstream_analyst;


--
-- Name: TABLE chunks; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.chunks TO callstream_writer;


--
-- Name: TABLE call_stream_summary; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.call_stream_summary TO callstream_analyst;


--
-- Name: TABLE calls; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.calls TO callstream_writer;
GRANT SELECT ON TABLE public.calls TO callstream_analyst;


--
-- Name: TABLE call_summary; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.call_summary TO callstream_analyst;


--
-- Name: TABLE call_track_summary; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.call_track_summary TO callstream_analyst;


--
-- Name: SEQUENCE chunks_id_seq; Type: ACL; Schema: public; Owner: -
--

GRANT USAGE ON SEQUENCE public.chunks_id_seq TO callstream_writer;


--
-- Name: TABLE emotion_timeline; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.emotion_timeline TO callstream_analyst;


--
-- Name: TABLE erasures; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.erasures TO callstream_writer;


--
-- Name: TABLE label_seconds; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.label_seconds TO callstream_analyst;


--
-- Name: TABLE model_comparison; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.model_comparison TO callstream_analyst;


--
-- Name: TABLE schema_migrations; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.schema_migrations TO callstream_writer;


--
-- Name: TABLE segment_pieces; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.segment_pieces TO callstream_writer;


--
-- PostgreSQL database dump complete
--


--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.schema_migrations VALUES (1, 'tables: calls, chunks ledger, emotion_segments', '2026-12-05 04:56:04.543691+00');
INSERT INTO public.schema_migrations VALUES (2, 'views: emotion_timeline, call_track_summary, call_summary', '2026-12-05 04:56:04.543691+00');
INSERT INTO public.schema_migrations VALUES (3, 'chunks.note; call_summary: complete once seqs 0..end are settled, later seqs counted', '2026-12-05 04:56:04.543691+00');
INSERT INTO public.schema_migrations VALUES (4, 'erasures (tombstones); roles callstream_writer and callstream_analyst (views, not the ledger)', '2026-12-05 04:56:04.543691+00');
INSERT INTO public.schema_migrations VALUES (5, 'participants: emotion_segments by participant id and role, media coverage; segment_pieces; chunk streams and per-stream completion; call_participant_summary', '2026-12-05 04:56:04.543691+00');
INSERT INTO public.schema_migrations VALUES (6, 'alerts: live alert firings, once per call and rule, with their publication time', '2026-12-05 04:56:04.543691+00');
INSERT INTO public.schema_migrations VALUES (7, 'segment_pieces.voice_probs and voice_cues; emotion_segments.evidence (in emotion_timeline); views model_comparison and label_seconds (shadow models)', '2026-12-05 04:56:04.543691+00');
INSERT INTO public.schema_migrations VALUES (8, 'chunks.status ''refused'' with error_reason call_erased (was ''erased''), keeping the call id so timeline and status can say a replay was refused', '2026-12-05 04:56:04.543691+00');


--
-- PostgreSQL database dump complete
--


