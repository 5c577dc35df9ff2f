from pathlib import Path

import pytest

from pipeline.settings import REPO_ROOT


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The repository's triton_models/, built from the installed packages if it is not yet."""
    from pipeline.modelbuild.build import build_all, is_built  # torch: only for tests that need models

    repo = REPO_ROOT / "triton_models"
    if not is_built(repo):
        build_all(repo)
    return repo


@pytest.fixture(scope="session")
def stack(tmp_path_factory, model_repository):
    """Real SeaweedFS, tansu, Postgres (DATABASE_URL's server or the embedded one) and tritonserver."""
    from tests.stack import start_stack, stop_stack

    started = start_stack(tmp_path_factory.mktemp("stack"))
    yield started
    stop_stack(started)
