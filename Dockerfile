# The gateway's image: one instance per container (compose.yaml runs two behind nginx).
# Build: docker build -t ai-gateway .   Run: see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Local disk of this instance only (journals, spool): a volume per container, never shared.
    DATA_DIR=/data \
    # Host and port come from uvicorn's environment so the command below is the same everywhere
    # (tests/e2e/test_two_instances.py runs it with its own port).
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8080

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# The app's bytecode, compiled once here: PYTHONDONTWRITEBYTECODE (and an /app the gateway user
# cannot write) would otherwise make every process compile it from source each time it starts,
# the log-ingest process each worker starts after a quiet spell included (docs/benchmark.md).
RUN python -m compileall -q .
RUN useradd --system --uid 10001 --home-dir /app gateway \
    && mkdir -p /data && chown gateway /data
USER gateway
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "gateway_project.healthcheck"]

CMD ["uvicorn", "gateway_project.asgi:application", "--workers", "2", "--no-access-log", "--no-server-header", "--no-date-header"]
