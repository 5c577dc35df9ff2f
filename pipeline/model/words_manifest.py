"""The `words` model's manifest (`triton_models/words/words.toml`): which Whisper folder transcribes
and what scores an utterance's valence. A user's own CTranslate2 Whisper folder (multilingual, larger)
is a change of this file, no code: faster-whisper loads any of them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from pipeline.model.manifest import Labelled, ManifestError, _problems, _Strict, tomllib

WORDS_MANIFEST = "words.toml"
WHISPER_FOLDER = "whisper-tiny.en"   # where `models build` puts the shipped Whisper tiny.en


class Transcriber(_Strict):
    """Speech to words with their times: a Whisper model in CTranslate2 format, run by faster-whisper."""
    folder: str = Field(default=WHISPER_FOLDER, description="the CTranslate2 Whisper folder (model.bin, "
                        "config.json, tokenizer.json, vocabulary.txt), relative to the manifest")
    compute_type: Literal["int8", "int8_float32", "float32", "float16", "int8_float16"] = Field(
        default="int8", description="CTranslate2's weights type: int8 on a CPU; float16 on a GPU")
    language: str | None = Field(default="en", min_length=2, max_length=8,
                                 description="the spoken language; none: detected per request (multilingual "
                                             "models only; an .en model is English only)")
    beam_size: int = Field(default=1, ge=1, le=10, description="1: greedy decoding (the CPU default); 5 is "
                                                               "Whisper's own, a few times the cost")
    vad_filter: bool = Field(default=True, description="transcribe only what faster-whisper's Silero VAD calls "
                                                       "speech: Whisper invents words in silence and music")
    vad_pad_ms: int = Field(default=100, ge=0, le=2000, description="speech kept either side of what the VAD "
                            "finds; Whisper times a stretch's first word from the stretch's start, so a wide pad "
                            "(faster-whisper's 400) moves first words early")


class TextEmotionNet(Labelled):
    """A text-emotion classifier of your own: an ONNX net taking `input_ids` and `attention_mask` (and
    `token_type_ids`, sent as zeros, where it declares one), int64 (batch, tokens), as Hugging Face exports
    sequence classifiers, with the `tokenizer.json` it was trained with (read by the `tokenizers`
    library). Its classes map onto the seven DFEW columns as a face net's do; an utterance's valence is
    the expected circumplex valence of that distribution."""
    tokenizer: str = Field(description="its tokenizer.json (Hugging Face tokenizers), relative to the manifest")
    max_tokens: int = Field(default=128, ge=8, le=4096, description="an utterance's tokens beyond this are cut")


class Valence(_Strict):
    """An utterance's valence, -1 unpleasant .. 1 pleasant."""
    kind: Literal["vader", "net"] = Field(default="vader", description="vader: VADER's lexicon and rules "
                                          "(vaderSentiment), built for conversational English, its compound score; "
                                          "net: the [valence.net] text-emotion classifier")
    net: TextEmotionNet | None = Field(default=None, description="the [valence.net] table, with kind = \"net\"")

    @model_validator(mode="after")
    def _net(self) -> Valence:
        if (self.kind == "net") != (self.net is not None):
            raise ValueError('kind = "net" and a [valence.net] table come together')
        return self


class WordsManifest(_Strict):
    """The words model: its name and version (every utterance row carries `name/version`), the
    transcriber and the valence."""
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
                      description="the model's name")
    version: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
                         description="its version; config.pbtxt's parameter model_version says `name/version`")
    description: str = Field(default="", max_length=500, description="free text about the model")
    transcriber: Transcriber = Field(default_factory=Transcriber, description="the [transcriber] table")
    valence: Valence = Field(default_factory=Valence, description="the [valence] table")
    max_audio_s: float = Field(default=120.0, gt=0, le=3600, description="the longest item a request may carry; "
                               "the worker sends at most its decode window (30 s) plus an unfinished utterance")

    @property
    def model_version(self) -> str:
        return f"{self.name}/{self.version}"


def load(path: Path) -> WordsManifest:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    try:
        return WordsManifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{path}: {'; '.join(_problems(exc))}") from None


TABLES: tuple[tuple[str, type[_Strict]], ...] = (
    ("(top level)", WordsManifest), ("[transcriber]", Transcriber), ("[valence]", Valence),
    ("[valence.net]", TextEmotionNet))
