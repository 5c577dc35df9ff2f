"""Small nets the tests build themselves, exported to ONNX, whose outputs depend on their input in a
known way, and the manifests that declare them: the bring-your-own-model path on real files.

Face net ("toy-face"): RGB 48x48, NCHW, pixels scaled to 0..1. With m the crop's mean, its logits over
its own labels (contempt, joy, anger, neutral, sorrow, fear, disgust, surprise) are 30m for contempt,
20m for anger and 2 for neutral: the manifest drops contempt, so any visible face (m > 0.1) is angry,
and a black crop is neutral.
Voice net ("toy-voice"): a waveform batch (N, T); with r the window's RMS its logits over (sadness,
happiness, neutral, anger, fear, disgust, surprise) are 40r for happiness and 1 for neutral: speech at
a normal level (r > 0.025) is happy, whispered speech neutral.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np

FACE_LABELS = ["contempt", "joy", "anger", "neutral", "sorrow", "fear", "disgust", "surprise"]
VOICE_LABELS = ["sadness", "happiness", "neutral", "anger", "fear", "disgust", "surprise"]


def _export(net, example, target: Path, dynamic: dict) -> Path:
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), str(target), input_names=["input"], output_names=["output"],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return target


def face_net(kind: str = "ok"):
    """kind: ok | nan (NaN on skin-coloured crops, never on noise) | wrong_shape (5 outputs)."""
    import torch

    class Face(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))
            z = torch.zeros_like(m)
            logits = torch.stack([30 * m, z, 20 * m, z + 2, z, z, z, z], dim=1)
            if kind == "nan":
                # NaN where the crop is clearly redder than blue (skin): noise never is, faces are.
                skin = x[:, 0].mean(dim=(1, 2)) - x[:, 2].mean(dim=(1, 2))
                logits = logits + torch.sqrt(0.08 - skin)[:, None] * 0   # sqrt of a negative: NaN
            if kind == "wrong_shape":
                logits = logits[:, :5]
            return logits

    return Face()


def voice_net(kind: str = "labels"):
    """kind: labels (the class scores above) | va: valence tanh(20r) in -1..1 and arousal
    sigmoid(40r - 2) in 0..1, so normal speech sits near happy and whispers near neutral."""
    import torch

    class Voice(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            r = torch.sqrt((x * x).mean(dim=1) + 1e-12)
            z = torch.zeros_like(r)
            if kind == "va":
                return torch.stack([torch.tanh(20 * r), torch.sigmoid(40 * r - 2)], dim=1)
            return torch.stack([z, 40 * r, z + 1, z, z, z, z], dim=1)

    return Voice()


def export_face(target: Path, kind: str = "ok") -> Path:
    import torch

    return _export(face_net(kind), torch.rand(2, 3, 48, 48), target,
                   {"input": {0: "batch"}, "output": {0: "batch"}})


def export_voice(target: Path, kind: str = "labels", batch: int | None = None) -> Path:
    """`batch`: export with that batch fixed (public exports often fix it at 1), else dynamic."""
    import torch

    dynamic = {"input": {1: "samples"}} if batch else {"input": {0: "batch", 1: "samples"}, "output": {0: "batch"}}
    return _export(voice_net(kind), torch.rand(batch or 2, 16000), target, dynamic)


def framed_voice_net():
    """The toy voice net behind a wav2vec-like framing: the waveform is cut into 20-ms frames of 320
    samples by a Reshape, so ONNX Runtime refuses a window whose length is not a multiple of 320 and
    answers every other one (the toy voice net's labels, from the frames' RMS)."""
    import torch

    class Framed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            frames = x.reshape(x.shape[0], x.shape[1] // 320, 320)
            r = torch.sqrt((frames * frames).mean(dim=(1, 2)) + 1e-12)
            z = torch.zeros_like(r)
            return torch.stack([z, 40 * r, z + 1, z, z, z, z], dim=1)

    return Framed()


def export_framed_voice(target: Path) -> Path:
    import torch

    return _export(framed_voice_net(), torch.rand(2, 16000), target,
                   {"input": {0: "batch", 1: "samples"}, "output": {0: "batch"}})


def manifest_text(face_file: str = "face.onnx", voice_file: str | None = "voice.onnx", name: str = "toy",
                  version: str | None = "1", extra_face: str = "", voice_kind: str = "labels") -> str:
    head = f'name = "{name}"\n' + (f'version = "{version}"\n' if version else "")
    text = head + f"""
[[face]]
name = "toy-face"
file = "{face_file}"
input_size = 48
color = "rgb"
layout = "NCHW"
scale = 0.00392156862745098
labels = {FACE_LABELS!r}
label_map = {{ contempt = "drop", sorrow = "sad" }}
{extra_face}
""".replace("'", '"')
    if voice_file and voice_kind == "va":
        text += f"""
[voice.emotion]
file = "{voice_file}"
window_s = 2.0
min_window_s = 0.5
output = "valence_arousal"
valence_range = [-1.0, 1.0]
arousal_range = [0.0, 1.0]
"""
    elif voice_file:
        text += f"""
[voice.emotion]
file = "{voice_file}"
window_s = 2.0
min_window_s = 0.5
labels = {VOICE_LABELS!r}
""".replace("'", '"')
    text += "\n[fusion]\nvoice_weight = 0.5\n"
    return text


def write_model(folder: Path, kind: str = "ok", voice: bool = True, voice_kind: str = "labels", **kw) -> Path:
    """A user's model folder: the two ONNX files and their manifest; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    export_face(folder / "face.onnx", kind)
    if voice:
        export_voice(folder / "voice.onnx", voice_kind)
        kw["voice_kind"] = voice_kind
    path = folder / "manifest.toml"
    path.write_text(manifest_text(voice_file="voice.onnx" if voice else None, **kw))
    return path


def scratch_repository(built: Path, target: Path) -> Path:
    """A model repository of its own for a test: the built-in weights' folders linked (read-only use),
    the emotion model copied, so installing versions never touches the checkout's triton_models/."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("face_detector", "face_expression", "voice", "words"):
        (target / name).symlink_to((built / name).resolve())
    shutil.copytree(built / "emotion", target / "emotion", symlinks=False)
    return target


def speech(rms: float = 0.1, seconds: float = 3.0) -> np.ndarray:
    """eSpeak NG speech at 16 kHz, scaled to an RMS level."""
    from scipy.signal import resample_poly

    from callstream_lab.speech import synthesize

    x, _ = synthesize("Thank you for calling. I have been waiting for a very long time, how can you help me?")
    y = resample_poly(x, 320, 441).astype(np.float32)
    y = np.tile(y, int(np.ceil(seconds * 16000 / len(y))))[: int(seconds * 16000)]
    return (y * rms / np.sqrt(np.mean(y ** 2))).astype(np.float32)


def astronaut_view(h: int = 270, w: int = 240) -> np.ndarray:
    """The astronaut's face centred on a dark background: a frame the detector finds a face in."""
    from skimage import data, transform

    face = transform.resize(data.astronaut()[0:300, 90:370], (int(h * 0.8), int(h * 0.8 * 280 / 300)),
                            preserve_range=True).astype(np.uint8)
    frame = np.full((h, w, 3), 40, np.uint8)
    y, x = (h - face.shape[0]) // 2, (w - face.shape[1]) // 2
    frame[y:y + face.shape[0], x:x + face.shape[1]] = face
    return frame


def write_clip(path: Path, audio: np.ndarray | None, face: bool = True, fps: int = 10) -> Path:
    """A labelled-set clip: the astronaut (or nothing) as H.264 video, `audio` (16 kHz) as AAC; a .wav
    path gets the audio alone."""
    import subprocess

    from callstream_lab.synth import write_wav
    from pipeline.media.ffmpeg_bin import ffmpeg_exe

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".wav":
        assert audio is not None
        write_wav(path, audio[None], 16000)
        return path
    seconds = len(audio) / 16000 if audio is not None else 3.0
    frame = astronaut_view() if face else np.full((270, 240, 3), 40, np.uint8)
    argv = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", "240x270", "-r", str(fps), "-i", "pipe:"]
    if audio is not None:
        wav = path.with_suffix(".wav.tmp")
        write_wav(wav, audio[None], 16000)
        argv += ["-f", "wav", "-i", str(wav), "-c:a", "aac"]
    argv += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-t", f"{seconds:.3f}", str(path)]
    frames = np.repeat(frame[None], int(seconds * fps), axis=0)
    subprocess.run(argv, input=frames.tobytes(), check=True, timeout=120)
    if audio is not None:
        wav.unlink()
    return path


def export_msp_dim_voice(target: Path) -> Path:
    """A stand-in with the exact signature of audeering's wav2vec2-large-robust-12-ft-emotion-msp-dim
    ONNX export: input `signal` (1, samples) float32 with the batch fixed at 1, outputs `hidden_states`
    (1, 1024) and then `logits` (1, 3) = arousal, dominance, valence, each in 0..1. Its numbers are the
    "va" toy's, scaled to 0..1: arousal sigmoid(40r - 2), valence (tanh(20r) + 1) / 2, dominance 0.5."""
    import torch

    class MspDim(torch.nn.Module):
        def forward(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            r = torch.sqrt((signal * signal).mean(dim=1) + 1e-12)
            hidden = r[:, None].repeat(1, 1024)
            logits = torch.stack([torch.sigmoid(40 * r - 2), torch.zeros_like(r) + 0.5, (torch.tanh(20 * r) + 1) / 2],
                                 dim=1)
            return hidden, logits

    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MspDim().eval(), (torch.rand(1, 16000),), str(target), input_names=["signal"],
                          output_names=["hidden_states", "logits"], dynamic_axes={"signal": {1: "samples"}},
                          opset_version=17, dynamo=False)
    return target


MSP_DIM_VOICE = """
[voice.emotion]
file = "msp-dim.onnx"
output = "valence_arousal"
output_name = "logits"
dimensions = ["arousal", "dominance", "valence"]
valence_range = [0.0, 1.0]
arousal_range = [0.0, 1.0]
window_s = 2.0
min_window_s = 0.5
"""


EMOTION2VEC_LABELS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]


def export_emotion2vec_voice(target: Path, head: bool = True) -> Path:
    """A stand-in with the signature of emotion2vec+ base exported to ONNX: input `input` (1, samples)
    float32, batch fixed at 1. FunASR's own `export(type="onnx")` stops at the encoder (`head=False`:
    output `output` (1, frames, 768), frames of 20 ms); with its 9-class head (`head=True`, what a user
    exports for labels) the output is `logits` (1, 9) in emotion2vec's order, EMOTION2VEC_LABELS. Its
    numbers: loud speech is angry, quiet speech neutral; `other` and `unknown` hold some mass."""
    import torch

    class Emotion2Vec(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            frames = x.reshape(x.shape[0], -1, 320)
            if not head:
                return frames.abs().mean(dim=2, keepdim=True).repeat(1, 1, 768)
            r = torch.sqrt((x * x).mean(dim=1) + 1e-12)
            z = torch.zeros_like(r)
            return torch.stack([40 * r - 2, z, z, z, z + 1, z + 0.5, z, z, z + 0.5], dim=1)

    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Emotion2Vec().eval(), (torch.rand(1, 16000),), str(target), input_names=["input"],
                          output_names=["logits" if head else "output"], dynamic_axes={"input": {1: "samples"}},
                          opset_version=17, dynamo=False)
    return target


EMOTION2VEC_VOICE = """
[voice.emotion]
file = "emotion2vec.onnx"
labels = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
label_map = { other = "drop", unknown = "drop" }
output = "logits"
window_s = 2.0
min_window_s = 0.5
"""


HSEMOTION_FACE = """
[[face]]
name = "hsemotion-enet-b0-8-afew"
file = "enet_b0_8_best_afew.onnx"
input_size = 224
color = "rgb"
layout = "NCHW"
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
output = "logits"
labels = ["Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"]
label_map = { Contempt = "drop" }
"""


def export_hsemotion_face(target: Path) -> Path:
    """A stand-in with the signature of HSEmotion's enet_b0_8_best_afew ONNX export: input `input`
    (batch, 3, 224, 224) float32 ImageNet-normalised RGB, output (batch, 8) logits in its order (Anger,
    Contempt, Disgust, Fear, Happiness, Neutral, Sadness, Surprise). Its numbers: Contempt would win on
    any crop, so a manifest that forgets to drop it shows; after the drop, Happiness."""
    import torch

    class Enet(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3)) * 0
            return torch.stack([m, m + 4, m, m, m + 3, m + 1, m, m], dim=1)

    target.parent.mkdir(parents=True, exist_ok=True)
    return _export(Enet(), torch.rand(2, 3, 224, 224), target, {"input": {0: "batch"}, "output": {0: "batch"}})


def write_public_model(folder: Path, name: str = "public") -> Path:
    """A model of the two classifiers' signatures: the HSEmotion face net and emotion2vec+ (with its
    head), as their manifests are documented in MODEL_CARD; returns the manifest's path."""
    export_hsemotion_face(folder / "enet_b0_8_best_afew.onnx")
    export_emotion2vec_voice(folder / "emotion2vec.onnx")
    path = folder / "manifest.toml"
    path.write_text(f'name = "{name}"\nversion = "1"\n' + HSEMOTION_FACE + EMOTION2VEC_VOICE
                    + "\n[fusion]\nvoice_weight = 0.5\n")
    return path


def labelled_clips(folder: Path) -> list[tuple[Path, str]]:
    """Four clips: an angry and a happy face speaking at a normal level, happy speech alone, and
    neutral whispered speech alone. The toy face net says angry on any face; its voice net happy on
    normal speech and neutral on whispers."""
    loud, quiet = speech(0.1, 3.0), speech(0.01, 3.0)
    return [(write_clip(folder / "v-angry.mp4", loud), "angry"),
            (write_clip(folder / "v-happy.mp4", loud), "happy"),
            (write_clip(folder / "a-happy.wav", loud), "happy"),
            (write_clip(folder / "a-neutral.wav", quiet), "neutral")]



# A text-emotion classifier with the signature of a Hugging Face sequence-classification export (e.g.
# j-hartmann/emotion-english-distilroberta-base: input_ids and attention_mask, int64 (batch, tokens);
# logits (batch, 7) in its class order), and the tokenizer.json it reads, built by `tokenizers`.
TEXT_LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
TEXT_WORDS = {"terrible": "anger", "awful": "anger", "angry": "anger", "furious": "anger", "disappointed": "sadness",
              "thank": "joy", "happy": "joy", "helpful": "joy", "wonderful": "joy", "great": "joy"}


def export_text_emotion(folder: Path) -> tuple[Path, Path]:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(sorted(TEXT_WORDS))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(len(vocab), len(TEXT_LABELS))
            w = torch.zeros(len(vocab), len(TEXT_LABELS))
            w[:, TEXT_LABELS.index("neutral")] = 4.0          # unknown words: neutral
            for word, label in TEXT_WORDS.items():
                w[vocab[word]] = 0
                w[vocab[word], TEXT_LABELS.index(label)] = 12.0
            self.embed.weight.data = w

        def forward(self, input_ids, attention_mask):
            m = attention_mask.unsqueeze(-1).float()
            return (self.embed(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)

    ids = torch.ones(2, 5, dtype=torch.int64)
    target = folder / "text-emotion.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (ids, torch.ones_like(ids)), str(target), input_names=["input_ids",
                          "attention_mask"], output_names=["logits"], dynamic_axes={
                              "input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return target, folder / "tokenizer.json"
