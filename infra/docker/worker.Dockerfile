# callstream worker (also usable for `callstream produce` and `callstream timeline`).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir .
# Prometheus metrics (CALLSTREAM_METRICS_PORT).
EXPOSE 9464
ENTRYPOINT ["callstream"]
CMD ["worker"]
