"""`callstream models`: build the built-in nets, add and list model versions, measure accuracy.

Parsing and printing only; the work is in pipeline.model.repository (install, list), the model
build and the evaluation modules.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.cli.base import Handler
from pipeline.settings import Settings

LOAD_TIMEOUT_S = 300.0


def register(sub: Any) -> dict[str, Handler]:
    m = sub.add_parser("models", help="build, add, list and evaluate emotion model versions")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    b = msub.add_parser("build", help="convert shipped weights into triton_models/")
    b.add_argument("--out", help="model repository to write (default: CALLSTREAM_MODEL_REPOSITORY)")
    a = msub.add_parser("add", help="validate a model manifest and its nets, install it as a new model version "
                                    "and load it into Triton (docs/MODEL_CARD.md, 'Bring your own model')")
    a.add_argument("manifest", help="a manifest.toml; its net files are read relative to it")
    a.add_argument("--as", dest="as_name", metavar="NAME", help="Triton model name (default: <name>-v<version>)")
    a.add_argument("--check", action="store_true", help="validate and trial-run only; install nothing")
    a.add_argument("--no-load", action="store_true", help="install, but do not ask Triton to load it")
    msub.add_parser("list", help="model versions in the repository, and what Triton serves")
    msub.add_parser("refresh", help="rewrite installed versions' model.py and config.pbtxt from this release's "
                                    "(after an upgrade, before Triton starts; `up` does it)")
    msub.add_parser("reference", help="every manifest key: type, default and meaning (docs/MANIFEST.md)")
    f = msub.add_parser("faceapi", help="convert @vladmandic/face-api's expression net (npm, MIT) to ONNX and add "
                                        "it as model version faceapi-expression/1: a second real face net")
    f.add_argument("--package", help="an unpacked package folder (default: `npm pack` it from the registry)")
    f.add_argument("--no-load", action="store_true", help="install, but do not ask Triton to load it")
    e = msub.add_parser("eval", help="WAR / UAR per modality on labelled clips or images (a folder per label, a "
                                     "CSV path,label, or RAVDESS / CREMA-D file names)")
    e.add_argument("dataset")
    e.add_argument("--limit", type=int, default=0, help="evaluate at most N files")
    e.add_argument("--per-clip", action="store_true", help="also print each clip's truth and each modality's label")
    e.add_argument("--model", action="append", help="a model (version) of the repository; repeatable "
                                                    "(default: CALLSTREAM_TRITON_MODEL)")
    e.add_argument("--words", action="store_true", help="also hear the clips through the words model "
                   "(CALLSTREAM_WORDS_MODEL): voice and fused with and without the words' valence, and the word "
                   "error rate where a CSV's third column gives the transcript")
    return {"models": run}


def run(settings: Settings, args: argparse.Namespace) -> int:
    return {"build": build, "add": add, "list": show, "eval": evaluate, "faceapi": faceapi,
            "reference": reference, "refresh": refresh}[args.models_cmd](
        settings, args)


def refresh(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.model.repository import refresh as rewrite

    changed = rewrite(settings.model_repository)
    print(f"{settings.model_repository}: " + (f"refreshed {', '.join(changed)}" if changed else
                                              "every installed version is current"))
    return 0


def build(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.model.build.build import build_all

    info = build_all(Path(args.out or settings.model_repository))
    for s in info["sources"]:
        print(f"  {s['package']} {s['version']} {s['file']} ({s['licence']}) sha256 {s['sha256'][:12]}")
    print(f"built {len(info['artifacts'])} artifacts in {info['seconds']}s")
    return 0


def faceapi(settings: Settings, args: argparse.Namespace) -> int:
    import tempfile

    from pipeline.model.build import faceapi as conversion

    with tempfile.TemporaryDirectory(prefix="callstream-faceapi-") as tmp:
        package = Path(args.package) if args.package else conversion.fetch(Path(tmp))
        manifest = conversion.convert(package, Path(tmp) / "model")
        print(f"converted {conversion.PACKAGE}@{conversion.VERSION}'s expression net to ONNX")
        return add(settings, argparse.Namespace(manifest=str(manifest), as_name=None, check=False,
                                                no_load=args.no_load))


def add(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.model.repository import add as install

    result, report, new = install(Path(args.manifest), settings.model_repository, args.as_name, dry_run=args.check)
    def batch(net: dict) -> str:
        n = net.get("max_batch")
        return f" (its batch is fixed at {n}: served {n} at a time)" if n else ""

    for face in report["face"]:
        print(f"  face net {face['name']}: input {face['input_shape']} {face['input_dtype']}{batch(face)}, trial "
              f"run ok at batches of 1 and 8 (labels on noise: {', '.join(face['trial_labels'])})")
    if report["voice"]:
        v = report["voice"]
        print(f"  voice net: input {v['input_shape']} {v['input_dtype']}{batch(v)}, trial run ok at batches of 1 "
              "and 8")
    if args.check:
        print(f"{args.manifest}: valid; would install {result.model_version} as model {result.triton_name}")
        return 0
    if not new:
        print(f"{result.model_version} is already installed as {result.triton_name} (same contents)")
    else:
        print(f"installed {result.model_version} as model {result.triton_name} in {settings.model_repository}")
    if not args.no_load:
        print(_load(settings, result.triton_name))
    print(f"  shadow it:   CALLSTREAM_SHADOW_MODEL={result.triton_name} callstream worker\n"
          f"  serve it:    CALLSTREAM_TRITON_MODEL={result.triton_name} callstream worker\n"
          f"  compare:     SELECT * FROM model_comparison WHERE model_version_a = '{result.model_version}' "
          f"OR model_version_b = '{result.model_version}';")
    return 0


def _load(settings: Settings, name: str) -> str:
    """Ask the running Triton to load (or reload) a model; says what happened, never raises."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
        client.load_model(name, client_timeout=LOAD_TIMEOUT_S)
        ready = client.is_model_ready(name)
    except InferenceServerException as exc:
        return (f"  not loaded: Triton at {settings.triton_grpc_url} said: {str(exc.message() or exc)[:300]}\n"
                "  (a server without --model-control-mode=explicit loads it at its next start)")
    return f"  loaded by Triton at {settings.triton_grpc_url}: {'ready' if ready else 'NOT ready'}"


def show(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.model.repository import installed

    served = _served(settings)
    versions = installed(settings.model_repository)
    if not versions:
        print(f"no model versions in {settings.model_repository}: run `callstream models build`")
        return 1
    print(f"{'model':<36} {'model_version':<52} {'served':<12} {'nets'}")
    for v in versions:
        role = " (primary)" if v.triton_name == settings.triton_model else (
            " (shadow)" if v.triton_name == settings.shadow_model else "")
        nets = ", ".join(f"face:{f.name}" for f in v.manifest.face)
        nets += ", voice:emotion net" if v.manifest.voice.emotion is not None else ", voice:arousal"
        state = served.get(v.triton_name, "unknown") if served is not None else "unreachable"
        print(f"{v.triton_name + role:<36} {v.model_version:<52} {state:<12} {nets}")
    if served is None:
        print(f"(Triton at {settings.triton_grpc_url} did not answer: what it serves is unknown)")
    return 0


def _served(settings: Settings) -> dict[str, str] | None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
        index = client.get_model_repository_index(as_json=True, client_timeout=5)
    except InferenceServerException:
        return None
    return {m["name"]: m.get("state", "UNAVAILABLE").lower() for m in index.get("models", [])}


def evaluate(settings: Settings, args: argparse.Namespace) -> int:
    """Clips through each served model version's whole path, photographs through its face path."""
    import asyncio

    from pipeline.evaluation import (
        Served,
        evaluate_clips,
        evaluate_images,
        load,
        per_clip_lines,
        report,
        split,
        transcripts,
    )
    from pipeline.media.ffmpeg_bin import ffmpeg_exe

    items = load(Path(args.dataset))[: args.limit or None]
    clips, images = split(items)

    async def one(model: str) -> list[str]:
        served = await Served.connect(settings.triton_grpc_url, model,
                                      words_model=settings.words_model if args.words else None)
        try:
            name = f"{model} ({served.version})"
            lines: list[str] = []
            if clips:
                result = await evaluate_clips(served, clips, settings.sample_fps, settings.frame_width,
                                              settings.segment_ms, ffmpeg_exe(settings.ffmpeg_binary),
                                              transcripts(Path(args.dataset)))
                lines += report(f"{name}, clips", result)
                if getattr(args, "per_clip", False):
                    lines += per_clip_lines(result)
            if images:
                lines += await evaluate_images(served, images, f"{name}, images", settings.frame_width)
            return lines
        finally:
            await served.close()

    for model in args.model or [settings.triton_model]:
        print("\n".join(asyncio.run(one(model))))
    return 0


def reference(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.model.manifest import reference as text

    print(text())
    return 0
