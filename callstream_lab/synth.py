"""Generated calls for the demo, tests and benchmarks: two real faces side by side, real speech.

Faces come from scikit-image's astronaut photograph (a real face the detector and classifier must find);
voices are eSpeak NG speech, agent on the left channel and customer on the right, taking turns.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import ffmpeg
import numpy as np

from callstream_lab.speech import synthesize

AGENT_LINES = [
    "Good morning, thank you for calling. My name is Alex, how can I help you today?",
    "I am sorry to hear that. Let me pull up your account right away.",
    "I can see the duplicate charge. I will refund it now, it takes two to three days.",
    "Is there anything else I can help you with today?",
]
CUSTOMER_LINES = [
    "Hi, I was charged twice for my subscription this month and I am not happy about it.",
    "Sure, my account number is four five seven two nine.",
    "Okay, thank you, that is great news. I really appreciate the quick help.",
    "No, that is all. Have a nice day.",
]


def _face_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()[0:300, 90:370]  # head and shoulders


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    ys = (np.arange(h) * img.shape[0] / h).astype(int)
    xs = (np.arange(w) * img.shape[1] / w).astype(int)
    return img[ys][:, xs]


def _conversation(seconds: float, rate: int = 48_000) -> np.ndarray:
    """(2, S) float32: agent and customer alternate turns with pauses between them."""
    total = int(seconds * rate)
    out = np.zeros((2, total), np.float32)
    t, turn = int(0.3 * rate), 0
    while t < total:
        speaker = turn % 2
        lines = AGENT_LINES if speaker == 0 else CUSTOMER_LINES
        speech, sr = synthesize(lines[(turn // 2) % len(lines)], pitch=45 if speaker == 0 else 70)
        # Resample eSpeak's 22.05 kHz to the container rate by linear interpolation (test media only).
        n = int(len(speech) * rate / sr)
        speech = np.interp(np.arange(n) * sr / rate, np.arange(len(speech)), speech).astype(np.float32)
        end = min(total, t + n)
        out[speaker, t:end] = speech[: end - t] * 0.8
        t = end + int(0.6 * rate)
        turn += 1
    return out


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    pcm = (np.clip(audio.T, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(audio.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def generate_call(ffmpeg_bin: str, out: Path, seconds: float = 20.0, width: int = 640, height: int = 360,
                  fps: int = 15, gop_seconds: float = 1.0, stereo: bool = True, video: bool = True,
                  audio: bool = True, away_customer: tuple[float, float] | None = (12.0, 15.0)) -> Path:
    """Write an H.264/AAC MP4. `away_customer` blanks the customer's view for that window (no face)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    wav = out.with_suffix(".wav")
    streams = []
    if audio:
        conv = _conversation(seconds)
        write_wav(wav, conv if stereo else conv.mean(axis=0, keepdims=True), 48_000)
        streams.append(ffmpeg.input(str(wav)).audio)
    proc = None
    if video:
        vin = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
        streams.insert(0, vin.video)
    kwargs = {"movflags": "+faststart", "t": seconds}
    if video:
        kwargs.update(vcodec="libx264", pix_fmt="yuv420p", preset="veryfast", g=int(fps * gop_seconds), bf=0,
                      keyint_min=int(fps * gop_seconds), sc_threshold=0)
    if audio:
        kwargs.update(acodec="aac", audio_bitrate="96k")
    argv = (ffmpeg.output(*streams, str(out), **kwargs).global_args("-hide_banner", "-loglevel", "error")
            .overwrite_output().compile(cmd=ffmpeg_bin))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if video else subprocess.DEVNULL, stderr=subprocess.PIPE)
    if video:
        face = _resize(_face_image(), int(height * 0.8), int(height * 0.8 * 280 / 300))
        half = width // 2
        for i in range(int(seconds * fps)):
            t = i / fps
            frame = np.full((height, width, 3), (40, 44, 52), np.uint8)
            frame[:, half:] = (52, 48, 40)
            for side in (0, 1):
                if side == 1 and away_customer and away_customer[0] <= t < away_customer[1]:
                    continue
                img = face if side == 0 else face[:, ::-1]
                dx = int(10 * np.sin(2 * np.pi * 0.2 * t + side))
                dy = int(6 * np.sin(2 * np.pi * 0.13 * t + side))
                x0 = side * half + (half - img.shape[1]) // 2 + dx
                y0 = (height - img.shape[0]) // 2 + dy
                x0 = int(np.clip(x0, side * half, side * half + half - img.shape[1]))
                y0 = int(np.clip(y0, 0, height - img.shape[0]))
                frame[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
            proc.stdin.write(frame.tobytes())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    err = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed generating {out}: {err[-500:]}")
    wav.unlink(missing_ok=True)
    return out


def _background(name: str, h: int, w: int) -> np.ndarray:
    from skimage import data

    return _resize(getattr(data, name)(), h, w)


def _view(t: float, face: np.ndarray, bg: np.ndarray, side: int, seconds: float) -> np.ndarray:
    """One participant's camera at time t: a textured room, a face that pans, zooms, turns (a yaw read
    as a horizontal squeeze), and leaves and re-enters the picture every 25 s, as people in calls do."""
    h, w = bg.shape[:2]
    view = bg.copy()
    phase = 1.7 * side
    zoom = 0.55 + 0.25 * (1 + np.sin(2 * np.pi * t / 11 + phase)) / 2          # face height / view height
    turn = 0.65 + 0.35 * abs(np.cos(2 * np.pi * t / 9 + phase))                # 1 = frontal
    fh = int(h * zoom)
    fw = max(8, int(fh * face.shape[1] / face.shape[0] * turn))
    img = _resize(face, fh, fw)
    free = max(0, w - fw)
    x0 = free / 2 + 0.35 * free * np.sin(2 * np.pi * t / 7 + phase)
    y0 = (h - fh) / 2 + 0.15 * (h - fh) * np.sin(2 * np.pi * t / 5 + phase)
    cycle = (t + 10 * side) % 25.0
    if 20.0 <= cycle < 23.0:                                                    # out to the side and back
        out = min(1.0, 1.4 * (1 - abs(cycle - 21.5) / 1.5))                    # 0 -> 1 (gone) -> 0
        x0 = x0 - out * (x0 + fw) if side == 0 else x0 + out * (w - x0)         # through the outer edge
    xa, ya = int(round(x0)), int(round(np.clip(y0, 0, h - fh)))
    lo, hi = max(0, xa), min(w, xa + fw)
    if hi > lo:
        view[ya:ya + fh, lo:hi] = img[:, lo - xa:hi - xa]
    return view


def generate_moving_call(ffmpeg_bin: str, out: Path, seconds: float = 60.0, width: int = 640, height: int = 360,
                         fps: int = 24, gop_seconds: float = 2.0, container: str = "mp4") -> Path:
    """The benchmark's realistic workload: two webcam views side by side (dual layout), each a face that
    moves as people in calls move (`_view`) over a textured room with sensor noise, key frames every
    `gop_seconds` as WebRTC recorders write them, in MP4 (H.264/AAC) or WebM (VP8/Opus)."""
    if container not in ("mp4", "webm"):
        raise ValueError(f"container {container!r}: mp4 or webm")
    out.parent.mkdir(parents=True, exist_ok=True)
    wav = out.with_suffix(".src.wav")
    write_wav(wav, _conversation(seconds), 48_000)
    half = width // 2
    face = _face_image()
    rooms = [_background("coffee", height, half), _background("rocket", height, width - half)]
    rng = np.random.default_rng(7)
    noise = [rng.normal(0, 3, (height, width, 3)).astype(np.int16) for _ in range(7)]
    gop = max(1, int(round(fps * gop_seconds)))
    codecs = (["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "0", "-c:a", "aac",
               "-b:a", "96k", "-movflags", "+faststart"] if container == "mp4" else
              ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "16", "-threads", "2",
               "-b:v", f"{width * height // 250}k", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "64k"])
    argv = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:", "-i", str(wav), "-map", "0:v", "-map", "1:a",
            *codecs, "-g", str(gop), "-keyint_min", str(gop), "-t", str(seconds), str(out)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for i in range(int(seconds * fps)):
            t = i / fps
            frame = np.concatenate([_view(t, face, rooms[0], 0, seconds),
                                    _view(t, face[:, ::-1], rooms[1], 1, seconds)], axis=1).astype(np.int16)
            proc.stdin.write(np.clip(frame + noise[i % len(noise)], 0, 255).astype(np.uint8).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    wav.unlink(missing_ok=True)
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed generating {out}: {err[-500:]}")
    return out


def generate_track(ffmpeg_bin: str, out: Path, seconds: float, *, video: bool = True, audio: bool = True,
                   speaker: int = 1, video_until: float | None = None, width: int = 320, height: int = 240,
                   fps: int = 15, vcodec: str = "libx264", acodec: str = "aac", rate: int = 48_000,
                   channels: int = 1, silent_from: float | None = None, gop_seconds: float = 1.0) -> Path:
    """One participant's own recording, shaped like a recorder's per-track file: the face of that one
    person (mirrored for the customer), their voice (speaker 0 agent, 1 customer; or both, one per channel,
    with channels=2), any codec and rate (VP8/Opus in Matroska, mu-law or A-law at 8 kHz in WAV, ...).
    `video_until` ends the video there while the audio goes on: a camera switched off."""
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs, maps = [], []
    if audio:
        conv = _conversation(seconds)
        pcm = conv if channels == 2 else conv[speaker:speaker + 1]
        if silent_from is not None:
            pcm = pcm.copy()
            pcm[:, int(silent_from * 48_000):] = 0
        wav = out.with_suffix(".src.wav")
        write_wav(wav, pcm, 48_000)
        inputs += ["-i", str(wav)]
    frames_path = out.with_suffix(".src.rgb")
    if video:
        shown = min(seconds, video_until) if video_until is not None else seconds
        face = _resize(_face_image(), int(height * 0.8), int(height * 0.8 * 280 / 300))
        img = face if speaker == 0 else face[:, ::-1]
        with open(frames_path, "wb") as f:
            for i in range(int(shown * fps)):
                t = i / fps
                frame = np.full((height, width, 3), (46, 46, 46), np.uint8)
                x0 = (width - img.shape[1]) // 2 + int(8 * np.sin(2 * np.pi * 0.2 * t))
                y0 = (height - img.shape[0]) // 2 + int(5 * np.sin(2 * np.pi * 0.13 * t))
                x0 = int(np.clip(x0, 0, width - img.shape[1]))
                y0 = int(np.clip(y0, 0, height - img.shape[0]))
                frame[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
                f.write(frame.tobytes())
        inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
                  "-i", str(frames_path)] + inputs
    n = 0
    if video:
        maps += ["-map", "0:v"]
        n = 1
    if audio:
        maps += ["-map", f"{n}:a"]
    codecs: list[str] = []
    if video:
        codecs += ["-c:v", vcodec, "-pix_fmt", "yuv420p", "-g", str(int(fps * gop_seconds))]
        codecs += ["-preset", "veryfast", "-bf", "0"] if vcodec == "libx264" else ["-b:v", "300k"]
    if audio:
        codecs += ["-c:a", acodec, "-ar", str(rate), "-ac", str(channels)]
    argv = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-y", *inputs, *maps, *codecs, str(out)]
    proc = subprocess.run(argv, capture_output=True)
    frames_path.unlink(missing_ok=True)
    out.with_suffix(".src.wav").unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed generating {out}: {proc.stderr.decode(errors='replace')[-500:]}")
    return out


CALM_LINES = ["Hello, I am calling about my order from last week.",
              "It has not arrived yet, could you please check where it is?",
              "Thank you, I can wait a moment while you look it up."]
ANGRY_LINES = ["I have been waiting for forty minutes and nobody calls me back!",
               "This is completely unacceptable, I want my money back right now!",
               "I am done with this company, cancel everything today!"]


def speech_wav(out: Path, calm_s: float, shout_s: float = 0.0, rate: int = 16_000) -> Path:
    """One speaker talking without pauses: `calm_s` of conversational speech (about -30 dBFS, 150 words a
    minute), then `shout_s` of loud, fast, high-pitched, saturated speech (about -10 dBFS, 230 wpm): the
    prosody of an upset caller, for arousal alerts. 16-bit mono WAV."""
    from scipy.signal import resample_poly

    def part(lines: list[str], seconds: float, shout: bool) -> np.ndarray:
        pieces, total, i = [], 0, 0
        while total < seconds * rate:
            x, sr = synthesize(lines[i % len(lines)], pitch=80 if shout else 50, rate_wpm=230 if shout else 150)
            x = resample_poly(x, rate, sr).astype(np.float32)
            x /= max(float(np.abs(x).max()), 1e-6)
            x = np.tanh(4 * x) / np.tanh(4) * 0.9 if shout else x * 0.25
            gap = np.zeros(int(0.12 * rate), np.float32)
            pieces += [x, gap]
            total += len(x) + len(gap)
            i += 1
        return np.concatenate(pieces)[: int(seconds * rate)] if pieces else np.zeros(0, np.float32)

    audio = np.concatenate([part(CALM_LINES, calm_s, False), part(ANGRY_LINES, shout_s, True)])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, audio[None, :], rate)
    return out


def said_wav(out: Path, seconds: float, lines: list[tuple[float, str, bool]], rate: int = 16_000) -> Path:
    """One speaker saying each (start s, sentence, aroused) at its time, silence between: calls whose
    words are known, for the words model. Aroused: louder, faster, higher, as speech_wav shouts."""
    from scipy.signal import resample_poly

    audio = np.zeros(int(seconds * rate), np.float32)
    for start, line, aroused in lines:
        x, sr = synthesize(line, pitch=80 if aroused else 45, rate_wpm=210 if aroused else 150)
        x = resample_poly(x, rate, sr).astype(np.float32)
        x = x / max(float(np.abs(x).max()), 1e-6) * (0.8 if aroused else 0.3)
        a = int(start * rate)
        audio[a:a + len(x)] = x[: max(0, len(audio) - a)]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, audio[None, :], rate)
    return out
