"""gunicorn entrypoint of the webhook process: `webhook_wsgi:app`."""

from app.serving.entry import build_or_exit

app = build_or_exit("webhook")
