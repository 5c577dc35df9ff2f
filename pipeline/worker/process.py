"""One chunk, start to rows: payload (inline or claim check), decode a window at a time, segments,
inference.

Raises BadChunk for anything wrong with the chunk itself and TransientFault when a dependency is
down; returns rows ready for the writer otherwise. Memory is bounded by the decode window, not by
the chunk: frames are analysed and dropped window by window, and only the small rows are kept until
the chunk commits as one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.contract import ChunkMeta
from pipeline.errors import BadChunk
from pipeline.ingest.claimcheck import ClaimCheckStore
from pipeline.media.chunkfile import ChunkFile
from pipeline.media.decode import Decoded, StreamDecoder, Window
from pipeline.media.ffargs import AUDIO_RATE, DecodeOptions
from pipeline.media.segment import (
    Segment,
    SegmentPlanner,
    View,
    context_span,
    effective_duration,
    participants,
    segments,
    views,
    wants,
)
from pipeline.settings import Settings
from pipeline.shared.fusion import DEFAULT_FUSION, Evidence, FusionParams
from pipeline.store.models import Heard, PieceRow, TalkRow, UtteranceRow
from pipeline.worker.speech_client import SpeechClient
from pipeline.worker.transcript import ChunkWords
from pipeline.worker.triton_client import EmotionClient, Item
from pipeline.worker.words_client import WordsClient


@dataclass
class Timings:
    """What processing a chunk reports beside its pieces: its costs, notes for the ledger, and the
    utterances heard (CALLSTREAM_WORDS), written in the chunk's transaction."""
    fetch_ms: float = 0.0
    decode_ms: float = 0.0
    inference_ms: float = 0.0
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    utterances: list[UtteranceRow] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)   # their text, for phrase alerts only
    talk: list[TalkRow] = field(default_factory=list)   # speech activity of roles measured, not analysed


class MediaBuffer:
    """Decoded media not yet analysed, addressed in chunk time; dropped as segments are analysed."""

    def __init__(self, fps: float, channels: int) -> None:
        self.fps = fps
        self.first_frame, self.frames = 0, np.zeros((0, 2, 2, 3), np.uint8)
        self.first_sample, self.audio = 0, np.zeros((channels, 0), np.float32)

    def add(self, w: Window) -> None:
        if len(w.frames):
            self.frames = w.frames if not len(self.frames) else np.concatenate([self.frames, w.frames])
            if len(self.frames) == len(w.frames):
                self.first_frame = w.first_frame
        if w.audio.size:
            self.audio = w.audio if not self.audio.size else np.concatenate([self.audio, w.audio], axis=1)
            if self.audio.shape[1] == w.audio.shape[1]:
                self.first_sample = w.first_sample

    def frames_in(self, seg: Segment, chunk_start_ms: int) -> np.ndarray:
        """Frames sampled at i/fps seconds after the chunk start that fall inside the segment."""
        times = (np.arange(len(self.frames)) + self.first_frame) * (1000.0 / self.fps) + chunk_start_ms
        return self.frames[(times >= seg.start_ms) & (times < seg.end_ms)]

    def audio_end_ms(self, chunk_start_ms: int) -> int:
        """Call time up to which audio has been decoded into the buffer."""
        return chunk_start_ms + int((self.first_sample + self.audio.shape[1]) * 1000 // AUDIO_RATE)

    def audio_in(self, seg: Segment, chunk_start_ms: int, channel: int) -> np.ndarray:
        a = int(round((seg.start_ms - chunk_start_ms) * AUDIO_RATE / 1000)) - self.first_sample
        b = int(round((seg.end_ms - chunk_start_ms) * AUDIO_RATE / 1000)) - self.first_sample
        n = self.audio.shape[1]
        return self.audio[channel, max(0, min(a, n)):max(0, min(b, n))]

    def drop_before(self, ms: int, chunk_start_ms: int, keep_audio_ms: int = 0) -> None:
        """Frames before `ms` go; audio goes `keep_audio_ms` earlier (the next windows' context)."""
        frame = int(np.ceil((ms - chunk_start_ms) * self.fps / 1000.0 - 1e-9))
        cut = max(0, min(frame - self.first_frame, len(self.frames)))
        if cut:
            self.frames, self.first_frame = self.frames[cut:], self.first_frame + cut
        sample = int(round((ms - keep_audio_ms - chunk_start_ms) * AUDIO_RATE / 1000))
        cut = max(0, min(sample - self.first_sample, self.audio.shape[1]))
        if cut:
            self.audio, self.first_sample = self.audio[:, cut:], self.first_sample + cut


def build_items(segs: list[Segment], buf: MediaBuffer, views: list[View],
                chunk_start_ms: int) -> tuple[list[tuple[View, Segment]], list[Item]]:
    """Pure: cut buffered media into (participant, piece) items for the model."""
    keys, items = [], []
    empty_frames = np.zeros((0, 1, 1, 3), np.uint8)
    empty_audio = np.zeros(0, np.float32)
    for seg in segs:
        seen = buf.frames_in(seg, chunk_start_ms)
        for view in views:
            frames = empty_frames
            if view.x0 is not None and len(seen):
                frames = np.ascontiguousarray(seen[:, :, view.x0:view.x1])
            audio = empty_audio if view.channel is None else buf.audio_in(seg, chunk_start_ms, view.channel)
            keys.append((view, seg))
            items.append(Item(frames, audio))
    return keys, items


def with_voice_windows(keys: list[tuple[View, Segment]], items: list[Item], buf: MediaBuffer,
                       chunk_start_ms: int, window_ms: int) -> list[Item]:
    """Pure: the items, each with audio carrying the `window_ms` of context a voice-emotion net hears
    around its segment (media.segment.context_span); items as they are when no net wants one."""
    if window_ms <= 0:
        return [replace(item, voice=None) for item in items]
    end = buf.audio_end_ms(chunk_start_ms)
    return [replace(item, voice=buf.audio_in(context_span(seg, chunk_start_ms, end, window_ms), chunk_start_ms,
                                             view.channel) if view.channel is not None and len(item.audio) else None)
            for (view, seg), item in zip(keys, items, strict=True)]


def overlap(seg: Segment, start_ms: float, end_ms: float) -> int:
    return int(max(0.0, min(seg.end_ms, end_ms) - max(seg.start_ms, start_ms)))


def decoded_items(meta: ChunkMeta, decoded: Decoded, segment_ms: int, default_layout: str = "dual",
                  roles: frozenset[str] | None = None,
                  window_ms: int = 0) -> tuple[list[tuple[View, Segment]], list[Item]]:
    """Items of a chunk decoded whole (benchmarks of the bare model, `models eval`): the same cutting
    as the worker, for the analysed `roles` (everyone when None), with voice windows of `window_ms`."""
    channels = decoded.audio.shape[0] if decoded.audio.size else 0
    buf = MediaBuffer(decoded.fps, channels)
    buf.add(Window(0, decoded.frames, 0, decoded.audio))
    width = decoded.frames.shape[2] if len(decoded.frames) else None
    segs = segments(meta.start_ms, meta.duration_ms or decoded.duration_ms, segment_ms)
    chosen = [v for v in views(meta, default_layout, width, channels) if roles is None or v.role in roles]
    keys, items = build_items(segs, buf, chosen, meta.start_ms)
    return keys, with_voice_windows(keys, items, buf, meta.start_ms, window_ms) if window_ms else items


def decode_budget_s(settings: Settings, meta: ChunkMeta, container_ms: int | None, size_bytes: int) -> float:
    """Decode time a chunk may take: scales with the longest length it claims, which the media caps."""
    declared_ms = max(meta.duration_ms or 0, container_ms or 0)
    if not declared_ms:  # live fragments often declare nothing: assume a generous 1 MB per 10 s
        declared_ms = size_bytes // 100
    declared_ms = min(declared_ms, 24 * 3600 * 1000)
    return settings.decode_timeout_base_s + settings.decode_timeout_factor * declared_ms / 1000.0


log = logging.getLogger("callstream.worker")


@dataclass
class ModelRun:
    """One served model version the worker writes rows for: its client and the name and version its
    rows carry."""
    client: EmotionClient
    name: str
    version: str
    fusion: FusionParams = DEFAULT_FUSION   # how the writer fuses this version's pieces


class ChunkProcessor:
    def __init__(self, settings: Settings, client: EmotionClient, claims: ClaimCheckStore | None,
                 ffmpeg_bin: str, model_name: str, model_version: str, shadow: ModelRun | None = None,
                 on_shadow_error: Any = None, words: WordsClient | None = None,
                 speech: SpeechClient | None = None) -> None:
        """`shadow`: a second model version run on the same decoded media; its rows land beside the
        primary's (model_version is in their key). Its failures only cost its own rows for that chunk
        (`on_shadow_error(exc)` is told): they never fail, retry or dead-letter the chunk. `words`: the
        words model's client (CALLSTREAM_WORDS), None when off. `speech`: the speech model's client, which
        measures the talk of CALLSTREAM_SPEECH_ACTIVITY_ROLES; None when nobody's is measured."""
        self.settings, self.claims = settings, claims
        self.words, self.speech = words, speech
        self.measured = settings.measured_roles if speech is not None else frozenset()
        self.ffmpeg_bin = ffmpeg_bin
        self.primary = ModelRun(client, model_name, model_version)
        self.shadow, self.on_shadow_error = shadow, on_shadow_error

    @property
    def client(self) -> EmotionClient:
        return self.primary.client

    @property
    def context_ms(self) -> int:
        """Audio context the served voice-emotion nets want around a segment (0: none)."""
        return max(m.client.voice_window_ms for m in self.runs())

    def runs(self) -> list[ModelRun]:
        return [self.primary] + ([self.shadow] if self.shadow is not None else [])

    async def payload(self, meta: ChunkMeta, value: bytes | None, t: Timings) -> bytes:
        limit = self.settings.max_chunk_bytes
        if meta.claim_check:
            if value:
                raise BadChunk("malformed_header", "message has both a payload and a claim-check header")
            if self.claims is None:
                raise BadChunk("claim_check_missing", "no object store configured")
            start = time.perf_counter()
            payload = await asyncio.to_thread(self.claims.get, meta.claim_check, limit)
            t.fetch_ms = (time.perf_counter() - start) * 1000
        else:
            payload = value or b""
        if not payload:
            raise BadChunk("empty_value", "message value is empty and there is no claim-check header")
        if len(payload) > limit:
            raise BadChunk("too_large", f"{len(payload)} B > CALLSTREAM_MAX_CHUNK_BYTES={limit}")
        t.size_bytes = len(payload)
        return payload

    def not_analysed(self, meta: ChunkMeta) -> str | None:
        """Why this chunk's media must not reach the model at all, or None when it may."""
        if meta.consent == "none":
            return "not analysed: consent header is 'none'"
        if self.settings.require_consent and meta.consent != "emotion":
            return "not analysed: CALLSTREAM_REQUIRE_CONSENT and no 'consent: emotion' header"
        roles = {role for _, role in participants(meta, self.settings.default_layout)}
        if roles & self.settings.roles:
            return None
        if roles & self.measured:
            # Talk is measured on audio alone: a video track of a measured role has nothing for it.
            return None if wants(meta)[1] else "not analysed: a measured role's chunk without audio has no talk"
        also = " or CALLSTREAM_SPEECH_ACTIVITY_ROLES" if self.measured else ""
        return f"not analysed: {', '.join(sorted(roles))} not in CALLSTREAM_ANALYSED_ROLES{also}"

    def check_call_time(self, meta: ChunkMeta, end_ms: int) -> None:
        """Media past CALLSTREAM_MAX_CALL_S is refused: it bounds the rows (and no-media rows) one call makes."""
        limit = self.settings.max_call_s * 1000
        if end_ms > limit:
            raise BadChunk("malformed_header", f"chunk reaches {end_ms} ms of call time; CALLSTREAM_MAX_CALL_S "
                                               f"allows {limit} ms (start-ms={meta.start_ms})")

    async def process(self, meta: ChunkMeta, value: bytes | None) -> tuple[list[PieceRow], Timings]:
        t = Timings()
        skip = self.not_analysed(meta)
        if skip:
            # Nothing of the person is processed: the payload is not even fetched or decoded.
            t.notes.append(skip)
            return [], t
        self.check_call_time(meta, meta.start_ms + (meta.duration_ms or 0))
        payload = await self.payload(meta, value, t)
        with ChunkFile(payload) as path:
            del payload  # the file holds it now; a 64 MB value must not stay in memory twice
            return await self._analyse(meta, path, t), t

    async def _analyse(self, meta: ChunkMeta, path: Any, t: Timings) -> list[PieceRow]:
        s = self.settings
        start = time.perf_counter()
        size = t.size_bytes
        video, audio = wants(meta)
        if not {role for _, role in participants(meta, s.default_layout)} & s.roles:
            video = False   # only talk is measured here: nobody's face is decoded
        options = DecodeOptions(fast=s.fast_decode)
        dec = await asyncio.to_thread(StreamDecoder, self.ffmpeg_bin, path, s.sample_fps, s.frame_width,
                                      lambda info: decode_budget_s(s, meta, info.duration_ms, size), options,
                                      video, audio)
        try:
            t.decode_ms += (time.perf_counter() - start) * 1000
            tolerance = min(max(s.duration_tolerance_ms, 1000.0 / s.sample_fps), s.segment_ms - 1)
            context = self.context_ms
            planner = SegmentPlanner(meta.start_ms, s.segment_ms, tolerance, context)
            buf = MediaBuffer(s.sample_fps, dec.channels)
            width = dec.size[0] if dec.size else None
            # Only analysed roles are cut into items: nobody else's face or voice reaches the model.
            every = views(meta, s.default_layout, width, dec.channels)
            chosen = [v for v in every if v.role in s.roles]
            # Roles measured, not analysed: their audio alone, to the speech model only.
            measured = [replace(v, x0=None, x1=None) for v in every
                        if v.role in self.measured and v.channel is not None]
            pieces: list[PieceRow] = []
            said = ChunkWords(meta.start_ms, meta.end_of_call) if self.words is not None else None
            windows = 0
            while not dec.finished:
                start = time.perf_counter()
                buf.add(await asyncio.to_thread(dec.read, s.decode_window_s))
                windows += 1
                t.decode_ms += (time.perf_counter() - start) * 1000
                if dec.finished:
                    break  # the rest goes in one call below: a short chunk makes exactly one request
                segs = planner.ready(dec.decoded_ms)
                if segs:
                    pieces += await self._infer(meta, segs, buf, chosen, dec, t, parallel=False, said=said,
                                                measured=measured)
                    held = said.held_from() if said is not None else None
                    keep = context if held is None else max(context, segs[-1].end_ms - held)
                    buf.drop_before(segs[-1].end_ms, meta.start_ms, keep_audio_ms=keep)
            duration, note = effective_duration(meta.duration_ms, dec.info.duration_ms, dec.decoded_ms, tolerance,
                                                meta.start_ms, s.segment_ms)
            if note:
                t.notes.append(note)
            self.check_call_time(meta, meta.start_ms + duration)
            segs = planner.finish(duration)
            if segs:
                pieces += await self._infer(meta, segs, buf, chosen, dec, t, parallel=windows <= 1, said=said,
                                            final=True, measured=measured)
            elif said is not None and said.pending(meta.start_ms + duration):
                # Every segment was analysed with an earlier window: what is held still has to be heard.
                await self._hear(meta, meta.start_ms + duration, buf, chosen, said, final=True)
            if said is not None and self.words is not None:
                said.place(pieces)
                roles = {v.participant_id: v.role for v in chosen}
                t.utterances = said.rows(meta.call_id, meta.stream, meta.seq, roles, self.words.version,
                                         s.transcripts)
                t.heard = said.heard(roles, self.words.version)
            return pieces
        finally:
            # Also on cancellation: killing ffmpeg ends a read blocked in its thread at once.
            dec.close()

    async def _infer(self, meta: ChunkMeta, segs: list[Segment], buf: MediaBuffer, chosen: list[View],
                     dec: StreamDecoder, t: Timings, parallel: bool = True, said: ChunkWords | None = None,
                     final: bool = False, measured: list[View] | None = None) -> list[PieceRow]:
        """A chunk longer than one window sends its batches one at a time: a whole-call upload then
        takes one request slot of Triton, not all of them, and live chunks keep flowing. The words
        model hears the same stretch meanwhile, and the speech model the measured participants'."""
        keys, items = build_items(segs, buf, chosen, meta.start_ms)
        start = time.perf_counter()
        beside: list[Awaitable[None]] = []
        if said is not None:
            beside.append(self._hear(meta, segs[-1].end_ms, buf, chosen, said, final))
        if measured:
            beside.append(self._talk(meta, segs, buf, measured, dec, t))
        run = asyncio.ensure_future(self._run(self.primary, meta, keys, items, buf, parallel))
        await asyncio.gather(run, *beside)
        evidence = run.result()
        t.inference_ms += (time.perf_counter() - start) * 1000
        pieces = self._pieces(self.primary, meta, keys, evidence, dec)
        if self.shadow is not None:
            try:
                shadow = await asyncio.wait_for(self._run(self.shadow, meta, keys, items, buf, parallel=False),
                                                self.settings.shadow_timeout_s)
                pieces += self._pieces(self.shadow, meta, keys, shadow, dec)
            except Exception as exc:  # whatever the shadow does wrong, the primary's rows go on
                log.warning("shadow model %s failed on %s seq %d: %s", self.shadow.version, meta.call_id, meta.seq,
                            str(exc)[:300] or type(exc).__name__)
                if self.on_shadow_error is not None:
                    self.on_shadow_error(exc)
        return pieces

    async def _hear(self, meta: ChunkMeta, end_ms: int, buf: MediaBuffer, chosen: list[View], said: ChunkWords,
                    final: bool) -> None:
        """Each analysed participant's speech since the last stretch kept, transcribed."""
        assert self.words is not None
        end_ms = min(end_ms, buf.audio_end_ms(meta.start_ms))
        heard = [(v, *said.stretch(v.participant_id, end_ms)) for v in chosen if v.channel is not None]
        heard = [(v, a, b) for v, a, b in heard if b > a]
        audio = [buf.audio_in(Segment(a, b), meta.start_ms, v.channel) for v, a, b in heard if v.channel is not None]
        for (v, a, b), utterances in zip(heard, await self.words.transcribe(audio), strict=True):
            said.take(v.participant_id, [u.shifted(a) for u in utterances], a, b, final)

    async def _talk(self, meta: ChunkMeta, segs: list[Segment], buf: MediaBuffer, measured: list[View],
                    dec: StreamDecoder, t: Timings) -> None:
        """The measured participants' share of speech in each segment, nothing else of them."""
        assert self.speech is not None
        keys, items = build_items(segs, buf, measured, meta.start_ms)
        ratios = await self.speech.ratios([item.audio for item in items])
        audio_end = meta.start_ms + dec.audio_ms
        for (view, seg), ratio in zip(keys, ratios, strict=True):
            heard = overlap(seg, meta.start_ms, audio_end)
            t.talk.append(TalkRow(
                call_id=meta.call_id, participant_id=view.participant_id, role=view.role, stream=meta.stream,
                seq=meta.seq, cell_ms=seg.cell(self.settings.segment_ms), start_ms=seg.start_ms, end_ms=seg.end_ms,
                audio_ms=heard, speech_ms=int(round(ratio * heard)), min_speech_ratio=self.speech.min_speech_ratio,
                speech_model=self.speech.version))

    async def _run(self, model: ModelRun, meta: ChunkMeta, keys: list[tuple[View, Segment]], items: list[Item],
                   buf: MediaBuffer, parallel: bool) -> list[Evidence]:
        """One model version on the items: its own voice windows in, evidence out."""
        mine = with_voice_windows(keys, items, buf, meta.start_ms, model.client.voice_window_ms)
        return await model.client.infer(mine, parallel=parallel) if mine else []

    def _pieces(self, model: ModelRun, meta: ChunkMeta, keys: list[tuple[View, Segment]], results: list[Evidence],
                dec: StreamDecoder) -> list[PieceRow]:
        # What each stream really covered: a camera switched off ends the video, not the audio.
        video_end = meta.start_ms + dec.video_ms
        audio_end = meta.start_ms + dec.audio_ms
        return [self._piece(model, meta, view, seg, e,
                            overlap(seg, meta.start_ms, video_end) if view.x0 is not None else 0,
                            overlap(seg, meta.start_ms, audio_end) if view.channel is not None else 0)
                for (view, seg), e in zip(keys, results, strict=True)]

    def _piece(self, model: ModelRun, meta: ChunkMeta, view: View, seg: Segment, e: Evidence, video_ms: int,
               audio_ms: int) -> PieceRow:
        return PieceRow(
            call_id=meta.call_id, participant_id=view.participant_id, role=view.role,
            model_version=model.version, model_name=model.name,
            cell_ms=seg.cell(self.settings.segment_ms), stream=meta.stream, seq=meta.seq,
            start_ms=seg.start_ms, end_ms=seg.end_ms, video_ms=video_ms, audio_ms=audio_ms,
            frames=e.frames, faces=e.faces, face_weight=e.face_weight,
            face_probs=[float(x) for x in e.face_probs] if e.face_probs is not None else None,
            speech_ratio=e.speech_ratio, arousal=e.arousal,
            voice_probs=[float(x) for x in e.voice_probs] if e.voice_probs is not None else None,
            voice_cues=[float(x) for x in e.cues] if e.cues is not None else None,
            voice_dims=[float(x) if np.isfinite(x) else None for x in e.voice_dims]
            if e.voice_dims is not None else None)
