# Orket runtime image (docs/RUNBOOK.md, "Docker"). One image for both processes:
# the default command migrates, then serves the API; compose runs the webhook
# and the one-shot migration from the same image.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 orket \
    && useradd --system --uid 10001 --gid orket --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin orket

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code and its packaged assets, owned by root and not writable by orket.
COPY pyproject.toml README.md alembic.ini wsgi.py webhook_wsgi.py ./
COPY app ./app
COPY migrations ./migrations
COPY scripts/docker-entrypoint.sh ./scripts/docker-entrypoint.sh
RUN pip install --no-deps -e . \
    && chmod 0755 scripts/docker-entrypoint.sh \
    && chmod -R go-w /app

# The only writable place: databases, logs, fixtures, build workspaces.
RUN mkdir -p /data && chown orket:orket /data && chmod 0750 /data
VOLUME ["/data"]

ENV ORKET_DATA_DIR=/data \
    ORKET_CONFIG_DIR=/data/config \
    ORKET_HOST=0.0.0.0 \
    ORKET_PORT=8082 \
    ORKET_WEBHOOK_HOST=0.0.0.0 \
    ORKET_WEBHOOK_PORT=8080

USER orket

EXPOSE 8082 8080

HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${ORKET_PORT}/health', timeout=4)" || exit 1

CMD ["/app/scripts/docker-entrypoint.sh", "api"]
