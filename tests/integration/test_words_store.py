"""Words in Postgres: a chunk's utterances replace its earlier delivery's, a sentence cut by a chunk
boundary reads as one utterance, forget removes transcripts, and the analyst role reads valence but
never text (as that role, on a real server)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from pipeline.store.db import async_engine, sync_engine
from pipeline.store.erasure import forget
from pipeline.store.writer import SegmentWriter
from pipeline.worker.transcript import ChunkWords
from tests.unit.test_transcript import utt

pytestmark = pytest.mark.stack


def _piece(call, start, seq, valence):
    return dict(call_id=call, participant_id="c1", role="customer", model_version="v1", model_name="m",
                cell_ms=start, stream="", seq=seq, start_ms=start, end_ms=start + 1000, video_ms=0, audio_ms=1000,
                frames=0, faces=0, face_weight=0.0, face_probs=None, speech_ratio=0.9, arousal=0.3,
                voice_probs=None, voice_cues=None, voice_dims=None, word_ms=600, word_valence=valence)


def _commit(stack, call, seq, offset, said: ChunkWords, policy="text"):
    async def go():
        engine = async_engine(stack.settings)
        try:
            ledger = dict(topic="w", partition=0, offset=offset, call_id=call, seq=seq, stream="", status="done")
            pieces = [_piece(call, s, seq, -0.5) for s in range(said.chunk_start_ms, said.chunk_start_ms + 5000, 1000)]
            rows = said.rows(call, "", seq, {"c1": "customer"}, "whisper/1", policy)
            await SegmentWriter(engine).commit_chunk(dict(call_id=call, started_at=None, layout="customer",
                                                          last_seq=None), pieces, ledger, rows)
        finally:
            await engine.dispose()

    asyncio.run(go())


def _cut_sentence(call, stack, policy="text"):
    """'nothing is fixed at all' cut by the boundary at 5 s: heard as two halves, one per chunk."""
    first = ChunkWords(0, end_of_call=False)
    first.take("c1", [utt(1000, [(1000, 1500, "hello")], 0.0),
                      utt(4200, [(4200, 4600, "nothing"), (4600, 4990, "is")], -0.4)], 0, 5000, final=True)
    second = ChunkWords(5000, end_of_call=True)
    second.take("c1", [utt(5050, [(5050, 5500, "fixed"), (5500, 5900, "at"), (5900, 6400, "all")], -0.6)],
                5000, 10_000, final=True)
    _commit(stack, call, 0, 0, first, policy)
    _commit(stack, call, 1, 1, second, policy)


def test_a_sentence_cut_by_a_chunk_boundary_reads_once_as_one_utterance(stack):
    _cut_sentence("words-cut", stack)
    _cut_sentence("words-cut", stack)   # both chunks redelivered: nothing doubles
    with sync_engine(stack.settings).connect() as conn:
        said = conn.execute(text("SELECT text, word_count, pieces, valence, start_ms, end_ms FROM utterances "
                                 "WHERE call_id = 'words-cut' ORDER BY start_ms")).all()
        segment_words = conn.execute(text("SELECT start_ms, words FROM timeline_words WHERE call_id = 'words-cut' "
                                          "AND words IS NOT NULL ORDER BY start_ms")).all()
        valence = conn.execute(text("SELECT word_valence FROM emotion_timeline WHERE call_id = 'words-cut' "
                                    "AND start_ms = 0")).scalar_one()
    assert [(r.text, r.word_count, r.pieces) for r in said] == [("hello", 1, 1),
                                                                ("nothing is fixed at all", 5, 2)]
    assert said[1].valence == pytest.approx((-0.4 * 2 - 0.6 * 3) / 5) and (said[1].start_ms, said[1].end_ms) == (
        4200, 6400)
    assert segment_words == [(1000, "hello"), (4000, "nothing is"), (5000, "fixed at"), (6000, "all")]
    assert valence == pytest.approx(-0.5)


def test_a_redelivery_replaces_the_chunks_utterances_and_the_setting_decides_the_text(stack):
    _cut_sentence("words-policy", stack, policy="text")
    _cut_sentence("words-policy", stack, policy="none")
    with sync_engine(stack.settings).connect() as conn:
        rows = conn.execute(text("SELECT text, words, valence FROM utterance_pieces WHERE call_id = 'words-policy' "
                                 "ORDER BY start_ms")).all()
    assert len(rows) == 3 and all(r.text is None and r.words is None for r in rows)
    assert [r.valence for r in rows] == [0.0, -0.4, -0.6]


def test_forget_removes_the_transcripts(stack):
    _cut_sentence("words-forget", stack)
    forget(sync_engine(stack.settings), "words-forget")
    with sync_engine(stack.settings).connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM utterance_pieces WHERE call_id = 'words-forget'")).scalar_one()
    assert left == 0


def test_the_analyst_reads_valence_and_only_the_transcripts_role_reads_text(stack):
    _cut_sentence("words-roles", stack)
    engine = sync_engine(stack.settings)
    with engine.connect() as conn:
        conn.execute(text("SET ROLE callstream_analyst"))
        assert conn.execute(text("SELECT count(*) FROM utterance_valence WHERE call_id = 'words-roles'")
                            ).scalar_one() == 2
        assert conn.execute(text("SELECT sum(word_count) FROM utterance_pieces WHERE call_id = 'words-roles'")
                            ).scalar_one() == 6
        assert conn.execute(text("SELECT count(word_valence) FROM emotion_timeline WHERE call_id = 'words-roles'")
                            ).scalar_one() > 0
        for query in ("SELECT text FROM utterance_pieces", "SELECT words FROM utterance_pieces",
                      "SELECT * FROM utterance_pieces", "SELECT text FROM utterances",
                      "SELECT words FROM timeline_words"):
            with pytest.raises(ProgrammingError, match="permission denied"):
                conn.execute(text(query))
            conn.rollback()
            conn.execute(text("SET ROLE callstream_analyst"))
        # Nothing the analyst can read holds the words: the segments' evidence carries their valence only.
        evidence = conn.execute(text("SELECT evidence::text FROM emotion_segments WHERE call_id = 'words-roles'")
                                ).scalars().all()
        assert evidence and not any("fixed" in (e or "") for e in evidence)
    with engine.connect() as conn:
        conn.execute(text("SET ROLE callstream_transcripts"))
        assert "nothing is fixed at all" in conn.execute(text(
            "SELECT text FROM utterances WHERE call_id = 'words-roles'")).scalars().all()
