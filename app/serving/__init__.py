"""Serving under gunicorn: pre-start checks, background workers, shutdown (PROC-3/4)."""
