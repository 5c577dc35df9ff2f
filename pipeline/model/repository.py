"""The model repository as a set of installed manifests: check, install and list model versions.

Every model version is its own Triton model (`<repo>/<model>/config.pbtxt`, `manifest.toml`,
`1/model.py` and its nets in `1/`), so two versions can be served side by side (a shadow) and each
config carries the fusion parameters workers need. A version is immutable: its rows are keyed by its
`model_version`, so `models add` refuses to install different contents under a name/version that is
already there. Nothing is installed before every net has loaded and answered a trial run with the
shapes and labels its manifest declares: a bad manifest or model file never reaches a worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model import manifest as mf
from pipeline.shared.fusion import FusionParams
from pipeline.shared.wire import SAMPLE_RATE

TEMPLATE = "emotion"          # the built-in model: its config.pbtxt and model.py are every version's
INSTALL_INFO = "INSTALL_INFO.json"


def config_parameters(m: mf.Manifest) -> dict[str, str]:
    """What a model's config.pbtxt must say for workers to store and fuse as its manifest does."""
    window = m.voice.emotion.window_s if m.voice.emotion is not None else 0.0
    return {"model_version": m.model_version, "min_speech_ratio": repr(m.voice.min_speech_ratio),
            "fusion": m.fusion_params().to_json(), "voice_window_ms": str(int(round(window * 1000)))}


def check_config(config: dict[str, Any], m: mf.Manifest, where: str) -> None:
    """A served config that disagrees with its manifest would make workers store or fuse differently
    from what the model computes: the model refuses to load instead."""
    params = config.get("parameters", {})
    for key, want in config_parameters(m).items():
        have = params.get(key, {}).get("string_value")
        same = have == want
        if key == "fusion" and have is not None:
            same = FusionParams.from_json(have) == FusionParams.from_json(want)
        elif key == "min_speech_ratio" and have is not None:
            same = float(have) == float(want)
        if not same:
            raise mf.ManifestError(f"{where}: config.pbtxt parameter {key} is {have!r}, the manifest "
                                   f"says {want!r}; make them agree (`callstream models add` writes both)")


def render_config(template: str, triton_name: str, m: mf.Manifest) -> str:
    """The built-in config.pbtxt with this model's name and parameters (inputs, outputs, batching
    and instances are the same contract for every version)."""
    out = re.sub(r'^name: "[^"]*"', f'name: "{triton_name}"', template, count=1, flags=re.M)
    for key, value in config_parameters(m).items():
        line = f'parameters {{ key: "{key}", value: {{ string_value: {json.dumps(value)} }} }}'
        pattern = re.compile(rf'^parameters {{ key: "{key}".*$', re.M)
        out = pattern.sub(line.replace("\\", "\\\\"), out, count=1) if pattern.search(out) else out + line + "\n"
    return out


@dataclass
class Installed:
    triton_name: str
    model_version: str
    folder: Path
    manifest: mf.Manifest
    info: dict[str, Any]


def installed(repo: Path) -> list[Installed]:
    """Every model version of the repository (folders with a config.pbtxt and a manifest.toml)."""
    out = []
    for folder in sorted(Path(repo).iterdir()) if Path(repo).is_dir() else []:
        if (folder / "config.pbtxt").is_file() and (folder / mf.MANIFEST).is_file():
            m = mf.load(folder / mf.MANIFEST)
            info_path = folder / "1" / INSTALL_INFO
            info = json.loads(info_path.read_text()) if info_path.is_file() else {}
            out.append(Installed(folder.name, m.model_version, folder, m, info))
    return out


def served(repo: Path) -> list[str]:
    """The Triton models of the repository: folders with a config.pbtxt (`emotion` and the installed
    versions). The built-in weights' folders (`face_detector`, `face_expression`, `voice`) are not
    models: a server loads these by name (`--load-model` each), never with `*`."""
    return sorted(p.parent.name for p in Path(repo).glob("*/config.pbtxt"))


def refresh(repo: Path) -> list[str]:
    """Rewrite each installed version's glue (`1/model.py`, `config.pbtxt`) from the built-in model's,
    so a release that moves code or adds an output serves versions installed before it. The glue is
    not a version's identity (its nets and manifest are); returns the versions whose glue changed."""
    repo = Path(repo)
    template = repo / TEMPLATE
    code, config = (template / "1" / "model.py").read_text(), (template / "config.pbtxt").read_text()
    changed = []
    for v in installed(repo):
        if v.folder.resolve() == template.resolve():
            continue
        want = {v.folder / "1" / "model.py": code, v.folder / "config.pbtxt": render_config(config, v.triton_name,
                                                                                            v.manifest)}
        stale = {path: text for path, text in want.items() if not path.is_file() or path.read_text() != text}
        for path, text in stale.items():
            path.write_text(text)
        if stale:
            changed.append(v.triton_name)
    return changed


def trial_run(path: Path, repo: Path) -> dict[str, Any]:
    """Load every net a manifest names and run each on generated inputs, then the whole composition
    on a generated request: shapes, dtypes, labels and finite outputs, or a ManifestError."""
    from pipeline.model.analysis import Analyzer
    from pipeline.model.nets import NetOutputError, describe, trial_inputs

    analyzer = Analyzer.from_manifest(path, repo)
    report: dict[str, Any] = {"face": [], "voice": None}
    rng = np.random.default_rng(0)
    for i, net in enumerate(analyzer.faces):
        shape = net.run.input_shape
        want = (None, net.spec.channels, net.spec.input_size, net.spec.input_size) if net.spec.layout == "NCHW" \
            else (None, net.spec.input_size, net.spec.input_size, net.spec.channels)
        if shape and (len(shape) != 4 or any(s is not None and w is not None and s != w
                                              for s, w in zip(shape, want, strict=True))):
            raise mf.ManifestError(f"{path}: face[{i}]: the net takes input {list(shape)}; the manifest declares "
                                   f"{net.spec.layout} {list(want)} (None: any)")
        if net.run.input_dtype != net.spec.dtype:
            raise mf.ManifestError(f"{path}: face[{i}].dtype is {net.spec.dtype}; the net takes {net.run.input_dtype}")
        try:
            for n in TRIAL_BATCHES:     # as the worker sends them: one crop, and many stacked
                probs = net.probs(trial_inputs(net, n))
        except (NetOutputError, ValueError, RuntimeError) as exc:
            raise mf.ManifestError(f"{path}: face[{i}] ({net.spec.name}): trial run failed{_batch_hint(net.run)}: "
                                   f"{exc}") from None
        report["face"].append({"name": net.spec.name, **describe(net.run), "trial_labels": _labels(probs[:3])})
    if analyzer.voice_net is not None:
        v = analyzer.voice_net
        if v.run.input_shape and len(v.run.input_shape) != 2:
            raise mf.ManifestError(f"{path}: voice.emotion: the net takes input {list(v.run.input_shape)}; "
                                   "a waveform batch (batch, samples) is expected")
        lengths = sorted({int(v.spec.min_window_s * SAMPLE_RATE), int(v.spec.window_s * SAMPLE_RATE)})
        try:
            # Each length alone and as the worker stacks them: equal-length windows in one batch.
            for batch in TRIAL_BATCHES:
                probs = v.probs([rng.normal(0, 0.1, n).astype(np.float32) for n in lengths for _ in range(batch)])
        except (NetOutputError, ValueError, RuntimeError) as exc:
            raise mf.ManifestError(f"{path}: voice.emotion: trial run failed{_batch_hint(v.run)}: {exc}") from None
        report["voice"] = {**describe(v.run), "trial_labels": _labels(probs)}
    frames = rng.integers(0, 256, (2, 2, 96, 96, 3), dtype=np.uint8)
    audio = rng.normal(0, 0.1, (2, SAMPLE_RATE)).astype(np.float32)
    try:
        analyzer.run(frames, np.ones((2, 2), bool), audio, np.full(2, SAMPLE_RATE))
    except Exception as exc:  # whatever the composition raises, the version must not be installed
        raise mf.ManifestError(f"{path}: the composed model failed a trial request: {exc}") from None
    return report


# Batches a trial runs each net at: the worker's requests carry one item or many (the dynamic batcher
# stacks several chunks' crops and windows), so a net that passes here passes there.
TRIAL_BATCHES = (1, 8)


def _batch_hint(run: Any) -> str:
    if run.max_batch is None and not run.input_shape:   # TorchScript: its batch is not declared
        return (" (at batches of 1 and 8 items, as the worker sends them; a TorchScript net must take any "
                "batch: export it with a dynamic batch, or as ONNX with a fixed one)")
    return ""


def _labels(probs: np.ndarray) -> list[str]:
    from pipeline.shared.labels import DFEW_LABELS

    return [DFEW_LABELS[int(k)] for k in np.argmax(probs, axis=1)]


def digest(files: list[Path], text: str) -> str:
    h = hashlib.sha256(text.encode())
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def triton_name_of(m: mf.Manifest) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{m.name}-v{m.version}")[:120]


def add(source: Path, repo: Path, as_name: str | None = None,
        dry_run: bool = False) -> tuple[Installed, dict[str, Any], bool]:
    """Validate a manifest and its files, then install them as a new model version (`dry_run`: only
    validate). Returns the version, the trial report and whether anything was (or would be) installed
    (False: the same contents were already there)."""
    source, repo = Path(source), Path(repo)
    template = repo / TEMPLATE
    if not (template / "config.pbtxt").is_file() or not (template / "1" / "model.py").is_file():
        raise mf.ManifestError(f"{repo} is not a callstream model repository (no {TEMPLATE}/config.pbtxt)")
    versions = installed(repo)
    m, raw = _versioned(source, versions)
    name = as_name or triton_name_of(m)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,119}", name):
        raise mf.ManifestError(f"model name {name!r}: letters, digits, '_' and '-' only (at most 120)")
    nets = _net_files(source, m, raw)
    text = _toml(raw)
    fingerprint = digest(list(nets.values()), text)
    for other in versions:
        if other.model_version == m.model_version:
            if other.info.get("sha256") == fingerprint:
                return other, {"face": [], "voice": None}, False
            raise mf.ManifestError(f"{source}: {m.model_version} is already installed as {other.triton_name} "
                                   "with other contents; a version's rows are keyed by it: give this one a new "
                                   "`version` (or leave `version` out and one is assigned)")
        if other.triton_name == name:
            raise mf.ManifestError(f"model {name!r} already exists in {repo} (as {other.model_version})")
    info = {"model_version": m.model_version, "sha256": fingerprint, "source": str(source.resolve())}
    report = _install(repo, name, m, text, nets, info, dry_run)
    return Installed(name, m.model_version, repo / name, m, info), report, True


def _versioned(source: Path, versions: list[Installed]) -> tuple[mf.Manifest, dict[str, Any]]:
    """The source manifest (and its raw form), with the next free version where it names none. An
    installed model runs the repository's own detector and VAD."""
    m = mf.load(source)
    if m.detector.folder != mf.BUILTIN_DETECTOR:
        raise mf.ManifestError(f"{source}: detector.folder: an installed model uses the repository's built-in "
                               "detector; leave detector.folder out")
    if m.voice.vad != mf.BUILTIN_VAD:
        raise mf.ManifestError(f"{source}: voice.vad: an installed model uses the repository's built-in VAD; "
                               "leave voice.vad out")
    raw = m.model_dump(exclude_none=True)
    if m.version is None:
        taken = [int(i.manifest.version) for i in versions
                 if i.manifest.name == m.name and i.manifest.version and i.manifest.version.isdigit()]
        raw["version"] = str(max(taken, default=0) + 1)
        m = mf.Manifest.model_validate(raw)
    return m, raw


def _net_files(source: Path, m: mf.Manifest, raw: dict[str, Any]) -> dict[str, Path]:
    """The user's net files (read relative to their manifest, wherever it is) by the file name each
    gets in the version folder; `raw` is rewritten to name those."""
    wanted = [(f"face[{i}].file", f.file) for i, f in enumerate(m.face)]
    if m.voice.emotion is not None:
        wanted.append(("voice.emotion.file", m.voice.emotion.file))
    nets: dict[str, Path] = {}
    for key, relative in wanted:
        path = source.parent / relative
        if not path.is_file():
            raise mf.ManifestError(f"{source}: {key}: {path} does not exist")
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name) or "net"
        while f"1/{base}" in nets:
            base = "_" + base
        nets[f"1/{base}"] = path
    local = list(nets)
    for i, f in enumerate(raw["face"]):
        f["file"] = local[i]
    if m.voice.emotion is not None:
        raw["voice"]["emotion"]["file"] = local[-1]
    return nets


def _install(repo: Path, name: str, m: mf.Manifest, text: str, nets: dict[str, Path], info: dict[str, Any],
             dry_run: bool) -> dict[str, Any]:
    """Build the version folder beside the repository, trial-run it there (with the built-in detector
    and VAD linked in), and move it into the repository only when everything answered."""
    template = repo / TEMPLATE
    staging = Path(tempfile.mkdtemp(prefix=".callstream-add-", dir=repo.parent))
    try:
        for builtin in ("face_detector", "voice"):
            os.symlink((repo / builtin).resolve(), staging / builtin)
        folder = staging / name
        (folder / "1").mkdir(parents=True)
        shutil.copyfile(template / "1" / "model.py", folder / "1" / "model.py")
        for local, path in nets.items():
            shutil.copyfile(path, folder / local)
        (folder / mf.MANIFEST).write_text(text)
        try:
            report = trial_run(folder / mf.MANIFEST, staging)
        except mf.ManifestError as exc:
            # The trial ran on a staged copy that is deleted below: name the user's manifest instead.
            raise mf.ManifestError(str(exc).replace(str(folder / mf.MANIFEST), str(info["source"]))) from None
        (folder / "config.pbtxt").write_text(render_config((template / "config.pbtxt").read_text(), name, m))
        info.update(installed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), trial=report)
        (folder / "1" / INSTALL_INFO).write_text(json.dumps(info, indent=2))
        if not dry_run:
            shutil.move(str(folder), str(repo / name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _toml(value: dict[str, Any]) -> str:
    """A manifest dict as TOML (tables after plain keys; arrays of tables for the face nets)."""
    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {scalar(x)}" for k, x in v.items()) + " }"
        return json.dumps(str(v))

    def table(prefix: str, d: dict[str, Any], header: str) -> list[str]:
        lines = [header] if header else []
        nested: list[tuple[str, Any]] = []
        for k, v in d.items():
            if isinstance(v, dict) and k != "label_map":
                nested.append((k, v))
            elif isinstance(v, list | tuple) and v and isinstance(v[0], dict):
                nested.append((k, v))
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in nested:
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, list | tuple):
                for item in v:
                    lines += ["", *table(name, item, f"[[{name}]]")]
            else:
                lines += ["", *table(name, v, f"[{name}]")]
        return lines

    return "\n".join(table("", value, "")) + "\n"
