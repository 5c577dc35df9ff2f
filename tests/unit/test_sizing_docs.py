"""One source of figures: OPERATIONS.md's sizing is generated from callstream_lab/sizing.py's measured
figures, and each of those figures is what docs/BENCHMARKS.md says. A figure changed in one place only
fails here, naming it."""

import re

import pytest

from callstream_lab import sizing
from pipeline.settings import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("phrase", sizing.benchmark_phrases())
def test_each_measured_figure_is_what_benchmarks_says(phrase):
    assert _flat(phrase) in _flat((DOCS / "BENCHMARKS.md").read_text()), phrase


def test_the_sizing_in_operations_is_generated_from_the_measured_figures():
    text = (DOCS / "OPERATIONS.md").read_text()
    assert set(re.findall(r"<!-- sizing:(\w+) -->", text)) == set(sizing.blocks())
    assert text == sizing.render(text), "docs/OPERATIONS.md is stale: run `./run size --write-docs`"


def test_no_figure_is_written_by_hand_outside_the_generated_blocks():
    text = re.sub(r"<!-- sizing:\w+ -->.*?<!-- /sizing -->", "", (DOCS / "OPERATIONS.md").read_text(), flags=re.S)
    stray = re.findall(r"[^\n]*\d[\d.,]*\s*(?:video-s/s|MB|GB|% of)[^\n]*", text)
    assert stray == [], stray


def test_a_changed_figure_changes_the_docs_and_is_caught():
    """The check can fail: a capacity measured differently renders other docs, and the phrase moves."""
    s360, s720 = sizing.MEASURED.shapes
    other = sizing.Measured(**{**sizing.MEASURED.__dict__,
                               "shapes": (sizing.Shape(**{**s360.__dict__, "capacity": 40.0}), s720)})
    text = (DOCS / "OPERATIONS.md").read_text()
    assert sizing.render(text, other) != text
    assert "**40.0** (" not in (DOCS / "BENCHMARKS.md").read_text()
    assert any("**40.0**" in p for p in sizing.benchmark_phrases(other))


def test_the_arithmetic():
    s360 = sizing.MEASURED.shape("640x360@24")
    a = sizing.size(500, s360)
    # 500 video-s/s at half of 25.15 per core; workers 24 ms and Triton 10 ms of CPU per video-second.
    assert (a.cpu_cores, a.worker_cores, a.triton_cores, a.workers, a.partitions) == (40, 24, 10, 12, 12)
    assert a.rows_per_s == 500 and a.chunks_per_s == 100 and a.kafka_mb_s == pytest.approx(60.7, abs=0.1)
    both = sizing.size(500, s360, participants=2)
    assert both.load == 1000 and both.cpu_cores == 80 and both.rows_per_s == 1000 and both.kafka_mb_s == a.kafka_mb_s
    own = sizing.size(500, s360, per_core=12.575)    # recordings that cost twice the generated ones
    assert own.cpu_cores == 80 and own.worker_cores == 48 and own.triton_cores == 20
    assert sizing.size(2000, s360).partitions == 48 and sizing.size(10, s360).workers == 1
