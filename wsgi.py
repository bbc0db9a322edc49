"""gunicorn entrypoint of the API process: `wsgi:app`."""

from app.serving.entry import build_or_exit

app = build_or_exit("api")
