#!/bin/sh
# Container start (Dockerfile CMD). Usage: docker-entrypoint.sh [api|webhook|migrate]
#   api      migrate both databases (unless ORKET_SKIP_MIGRATE=1), then the API under gunicorn
#   webhook  the same, then the webhook receiver under gunicorn
#   migrate  only migrate (the one-shot compose service); ignores ORKET_SKIP_MIGRATE
# Without ORKET_API_KEY the API refuses to start and the container exits non-zero.
set -eu
cd "$(dirname "$0")/.."

migrate() {
    python -m flask --app wsgi orket migrate
}

skip_migrate() {
    case "${ORKET_SKIP_MIGRATE:-0}" in
        1 | true | TRUE | True | yes | YES | Yes) return 0 ;;
        *) return 1 ;;
    esac
}

role="${1:-api}"
case "$role" in
    migrate)
        migrate
        ;;
    api | webhook)
        skip_migrate || migrate
        exec python -m gunicorn -c "python:app.serving.gunicorn_$role"
        ;;
    *)
        echo "usage: docker-entrypoint.sh [api|webhook|migrate]" >&2
        exit 2
        ;;
esac
