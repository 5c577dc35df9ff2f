# callstream worker (also usable for `callstream produce`, `timeline`, `db upgrade`, `forget`, `retention`).
# The project's core only: no torch, no lab (pyproject's extras hold those).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir .
# Prometheus metrics (CALLSTREAM_METRICS_PORT).
EXPOSE 9464
ENTRYPOINT ["callstream"]
CMD ["worker"]
