"""The real tritonserver binary from the nvidia-pytriton wheel, serving our model repository on CPU.

The wheel ships the server, the Python backend and one backend stub per Python version; we assemble a
backend folder under the state dir with the stub matching the running interpreter, so the models run
with this environment's torch and the `pipeline` package on their path.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import sys
from pathlib import Path

from callstream_lab.stack import procs
from pipeline.media.holders import remove_unheld
from pipeline.settings import REPO_ROOT, Settings

NAME = "tritonserver"


def _pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def _backends(state: Path) -> Path:
    root = _pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise procs.ServiceError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    backends = state / "triton" / "backends"
    python = backends / "python"
    python.mkdir(parents=True, exist_ok=True)
    files = [(item, item.name) for item in (root / "backends" / "python").iterdir() if item.is_file()]
    for src, name in files + [(stub, "triton_python_backend_stub")]:
        # Copy then rename: a stub still executing from an earlier server must not be overwritten in place.
        tmp = python / f".{name}.tmp"
        shutil.copy2(src, tmp)
        tmp.replace(python / name)
    return backends


def _stub_path(state: Path) -> Path:
    return state / "triton" / "backends" / "python" / "triton_python_backend_stub"


def kill_orphan_stubs(state: Path) -> list[int]:
    """Python-backend stubs of this stack's earlier servers still running (a server killed with -9
    leaves them behind, each holding its models' memory): kill them. Only stubs started from this
    state folder's backend copy are touched, never another stack's."""
    stub = str(_stub_path(state))
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        if argv0 == stub:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except ProcessLookupError:
                pass
    return killed


SHM_PREFIX = "triton_python_backend_shm_region_"


def _wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    """Killed stubs release their mappings only once they are gone."""
    import time

    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state == "Z":
                break
            time.sleep(0.05)


def remove_orphan_regions(shm: Path = Path("/dev/shm")) -> list[Path]:
    """Shared-memory regions of Python-backend models whose server was killed (its stubs' inputs and
    outputs: call media, tens of MB) that no live process holds. Regions of a running server, this
    stack's or another's on the same host, are mapped by it and its stubs, so they stay."""
    return remove_unheld({str(p): p for p in shm.glob(f"{SHM_PREFIX}*") if p.is_file()})


def start(settings: Settings) -> None:
    from pipeline.model.build.build import is_built

    if not is_built(settings.model_repository):
        raise procs.ServiceError(f"{settings.model_repository} has no built weights: run `callstream models build`")
    from pipeline.model.repository import refresh, served

    refresh(settings.model_repository)   # versions installed by an older release: this release's glue
    state = settings.state_dir
    url = f"http://127.0.0.1:{settings.triton_http_port}/v2/health/ready"
    if procs.running_pid(state, NAME):
        procs.wait_until(lambda: procs.http_ok(url), "tritonserver", 180, state, NAME)
        return
    _wait_gone(kill_orphan_stubs(state))
    remove_orphan_regions()
    root = _pytriton_root()
    libs = root.parent.parent / "nvidia_pytriton.libs"
    paths = [str(REPO_ROOT), *site.getsitepackages()]
    procs.start(state, NAME, [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={settings.model_repository}",
        f"--backend-directory={_backends(state)}",
        f"--http-port={settings.triton_http_port}", f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-port={settings.triton_metrics_port}", "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1", "--log-verbose=0", "--exit-on-error=true",
        "--strict-readiness=true", "--allow-metrics=true",  # batch sizes, queue time: docs/OPERATIONS.md
        # Explicit control, every model of the repository loaded at start (by name: the weights' folders
        # beside them are not models): `callstream models add` loads a new version into the running
        # server (a polling server would also pick up half-copied folders).
        "--model-control-mode=explicit", *[f"--load-model={m}" for m in served(settings.model_repository)],
    ], env={
        "LD_LIBRARY_PATH": f"{libs}:{root / 'lib'}",
        "PYTHONPATH": ":".join(paths),
        # The backend stub embeds Python and finds its prefix through PATH: point it at this
        # environment (as activating the venv would), or it boots the system Python without our packages.
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": sys.prefix,
        "OMP_NUM_THREADS": "1",
    })
    procs.wait_until(lambda: procs.http_ok(url), "tritonserver", 180, state, NAME)


def stop(settings: Settings) -> bool:
    """Whether a server was running (and is stopped now); its dead stubs and their regions go either way."""
    was_running = procs.stop(settings.state_dir, NAME, timeout=30)
    _wait_gone(kill_orphan_stubs(settings.state_dir))
    remove_orphan_regions()
    return was_running
