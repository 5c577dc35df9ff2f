"""The two houses and what each may import: the worker never loads the model package, the model
package and the Triton models import nothing of the product but `pipeline.shared`, and the Triton
image copies exactly those two packages."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from pipeline.settings import REPO_ROOT

PIPELINE = REPO_ROOT / "pipeline"
MODEL_HOUSE = ("pipeline.model", "pipeline.shared")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (functions' lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _project(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "pipeline" or m.startswith(("pipeline.", "callstream_lab"))}


def test_the_worker_never_loads_the_model_package_nor_its_runtimes():
    listed = subprocess.run(
        [sys.executable, "-c", "import sys, pipeline.worker.run, pipeline.worker.app\n"
                               "print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout.split()
    project = [m for m in listed if m.startswith("pipeline")]
    assert "pipeline.worker.triton_client" in project and "pipeline.shared.fusion" in project
    assert not [m for m in project if m.startswith("pipeline.model")], project
    assert not {"torch", "onnxruntime"} & set(listed)


def test_the_model_package_imports_only_itself_and_the_shared_module():
    for path in sorted((PIPELINE / "model").rglob("*.py")):
        outside = {m for m in _project(_imports(path)) if not m.startswith(MODEL_HOUSE)}
        assert not outside, f"{path.relative_to(REPO_ROOT)} imports {sorted(outside)}"


def test_the_shared_module_imports_nothing_of_either_house():
    for path in sorted((PIPELINE / "shared").rglob("*.py")):
        outside = {m for m in _project(_imports(path)) if not m.startswith("pipeline.shared")}
        assert not outside, f"{path.relative_to(REPO_ROOT)} imports {sorted(outside)}"
        assert not {m for m in _imports(path) if m.split(".")[0] in ("torch", "onnxruntime", "pydantic")}


def test_the_triton_models_import_the_model_house_and_the_image_copies_exactly_it():
    for path in sorted(REPO_ROOT.glob("triton_models/*/1/model.py")):
        outside = {m for m in _project(_imports(path)) if not m.startswith(MODEL_HOUSE)}
        assert not outside, f"{path.relative_to(REPO_ROOT)} imports {sorted(outside)}"
    dockerfile = (REPO_ROOT / "infra" / "docker" / "triton.Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (pipeline\S*) /opt/callstream/\1$", dockerfile, re.M))
    assert copied == {"pipeline/__init__.py", "pipeline/model", "pipeline/shared"}, copied


def test_models_eval_is_a_client_of_the_served_model():
    outside = {m for m in _project(_imports(PIPELINE / "evaluation.py")) if m.startswith("pipeline.model")}
    assert not outside, outside

