"""Pure: a participant's grid rows from the pieces chunks observed, and the no-media rows of its gaps.

Every row is one grid cell `[k*S, (k+1)*S)` built from all of the cell's pieces, so a cell that two
chunks (or an audio and a video chunk) share is one row whichever arrived first, and a redelivered
chunk changes nothing. Only the participant's last cell may be shorter: it ends where their media ends.
A cell between two observed cells with no media at all is a row with media 'none', so a gap is never a
stretch a `count(*)` silently misses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pipeline.shared.fusion import Evidence, FusionParams, explain, fuse_evidence, merge
from pipeline.shared.labels import DFEW_LABELS
from pipeline.store.models import SegmentRow


def evidence(piece: Mapping[str, Any]) -> Evidence:
    probs, heard, cues = piece["face_probs"], piece.get("voice_probs"), piece.get("voice_cues")
    return Evidence(frames=piece["frames"], faces=piece["faces"], face_weight=piece["face_weight"],
                    face_probs=np.asarray(probs, np.float64) if probs is not None else None,
                    audio_ms=piece["audio_ms"], speech_ratio=piece["speech_ratio"], arousal=piece["arousal"],
                    voice_probs=np.asarray(heard, np.float64) if heard is not None else None,
                    cues=np.asarray(cues, np.float64) if cues is not None else None,
                    voice_dims=dimensions(piece.get("voice_dims")), word_ms=piece.get("word_ms") or 0,
                    word_valence=piece.get("word_valence"))


def dimensions(stored: list[float | None] | None) -> np.ndarray | None:
    """A piece's stored voice dimensions (NULL for one the net does not answer) as the NaN-holed vector."""
    return None if stored is None else np.asarray([np.nan if x is None else x for x in stored], np.float64)


def _dim(e: Evidence, k: int, speech: bool) -> float | None:
    x = e.voice_dims[k] if speech and e.voice_dims is not None else np.nan
    return float(x) if np.isfinite(x) else None


def media_of(video_ms: int, audio_ms: int) -> str:
    return {(True, True): "av", (True, False): "video", (False, True): "audio"}.get(
        (video_ms > 0, audio_ms > 0), "none")


def cell_rows(pieces: Iterable[Mapping[str, Any]], last_cell: int, segment_ms: int,
              fusion: FusionParams) -> list[SegmentRow]:
    """One row per cell that has pieces; every piece of those cells must be given. `last_cell` is the
    participant's last observed cell, the only one that may end before the grid line."""
    by_cell: dict[tuple[str, str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for p in pieces:
        by_cell[(p["call_id"], p["participant_id"], p["model_version"], p["cell_ms"])].append(p)
    rows = []
    for (call_id, pid, version, cell), ps in sorted(by_cell.items(), key=lambda kv: kv[0]):
        ps = sorted(ps, key=lambda p: (p["stream"], p["seq"]))
        merged = merge([evidence(p) for p in ps])
        f = fuse_evidence(merged, fusion)
        end = cell + segment_ms if cell < last_cell else min(cell + segment_ms, max(p["end_ms"] for p in ps))
        video_ms = min(end - cell, sum(p["video_ms"] for p in ps))
        audio_ms = min(end - cell, sum(p["audio_ms"] for p in ps))
        probs: list[float | None] = [None] * 7 if f.probs is None else [float(x) for x in f.probs]
        assert len(probs) == len(DFEW_LABELS) == 7  # neutral happy sad angry fear disgust surprise
        role = ps[-1]["role"]
        rows.append(SegmentRow(
            call_id=call_id, participant_id=pid, role=role, track=role, start_ms=cell, end_ms=end,
            model_version=version, model_name=ps[-1]["model_name"],
            neutral=probs[0], happy=probs[1], sad=probs[2], angry=probs[3], fear=probs[4], disgust=probs[5],
            surprise=probs[6], label=f.label, confidence=f.confidence, face_found=f.face_found,
            speech_found=f.speech_found, face_score=f.face_score if f.face_found else None, arousal=f.arousal,
            arousal_source=f.arousal_source, voice_valence=_dim(merged, 0, f.speech_found),
            voice_arousal=_dim(merged, 1, f.speech_found), voice_dominance=_dim(merged, 2, f.speech_found),
            speech_ratio=f.speech_ratio if audio_ms else None,
            word_valence=merged.word_valence if f.speech_found else None, media=media_of(video_ms, audio_ms),
            video_ms=video_ms, audio_ms=audio_ms, chunk_seq=min(p["seq"] for p in ps),
            evidence=explain(merged, f, fusion)))
    return rows


def gap_cells(below: int | None, lo: int, hi: int, above: int | None, segment_ms: int) -> list[int]:
    """Cells strictly between a chunk's cells [lo, hi] and the participant's nearest observed cells."""
    out: list[int] = []
    if below is not None:
        out += range(below + segment_ms, lo, segment_ms)
    if above is not None:
        out += range(hi + segment_ms, above, segment_ms)
    return out


def gap_row(call_id: str, participant_id: str, role: str, model_version: str, model_name: str, cell: int,
            segment_ms: int, seq: int) -> SegmentRow:
    """A cell inside the participant's timeline where they sent no media at all."""
    return SegmentRow(
        call_id=call_id, participant_id=participant_id, role=role, track=role, start_ms=cell,
        end_ms=cell + segment_ms, model_version=model_version, model_name=model_name, neutral=None, happy=None,
        sad=None, angry=None, fear=None, disgust=None, surprise=None, label=None, confidence=0.0,
        face_found=False, speech_found=False, face_score=None, arousal=None, arousal_source=None,
        voice_valence=None, voice_arousal=None, voice_dominance=None, speech_ratio=None, word_valence=None,
        media="none",
        video_ms=0, audio_ms=0, chunk_seq=seq, evidence=None)
