"""`make run` helpers: write the secrets a first run needs into `.env`, then serve both.

`python -m app.serving.first_run init` adds `ORKET_API_KEY` and `GITEA_WEBHOOK_SECRET`
to `.env` when they are missing (creating it with mode 0600, never overwriting a
value) and prints how to call the API and configure the Gitea hook.
`python -m app.serving.first_run serve` runs both gunicorn servers in the foreground
until Ctrl-C (or SIGTERM) stops both.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from dotenv import dotenv_values

GENERATED = {
    "ORKET_API_KEY": lambda: secrets.token_urlsafe(32),
    "GITEA_WEBHOOK_SECRET": lambda: secrets.token_hex(32),
}


def ensure_env_file(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """Append generated values for missing variables; returns the names added.

    A variable already set in the environment or in the file is left alone.
    """
    environ = dict(os.environ) if environ is None else environ
    existing = dotenv_values(path) if path.exists() else {}
    missing = [
        name
        for name in GENERATED
        if not (existing.get(name) or "").strip() and not environ.get(name, "").strip()
    ]
    if not missing:
        return []
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    text = path.read_text(encoding="utf-8")
    lines = [] if not text or text.endswith("\n") else [""]
    lines += [f"{name}={GENERATED[name]()}" for name in missing]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return missing


def print_instructions(
    path: Path, environ: dict[str, str] | None = None, *, show_key: bool = False
) -> None:
    """How to call the API and hook up Gitea; the key itself only when just made."""
    environ = dict(os.environ) if environ is None else environ
    values = {**dotenv_values(path), **environ} if path.exists() else dict(environ)
    host = values.get("ORKET_HOST") or "127.0.0.1"
    port = values.get("ORKET_PORT") or "8082"
    hook_host = values.get("ORKET_WEBHOOK_HOST") or "127.0.0.1"
    hook_port = values.get("ORKET_WEBHOOK_PORT") or "8080"
    print("Orket is starting. Try the API with:")
    key = values.get("ORKET_API_KEY", "<key>") if show_key else "$ORKET_API_KEY"
    print(f'  curl -H "X-API-Key: {key}" http://{host}:{port}/v1/version')
    if not show_key:
        print(f"  (the key is ORKET_API_KEY in {path} or your environment)")
    print("Gitea webhook (repository > Settings > Webhooks > Add webhook > Gitea):")
    print(f"  Target URL:   http://{hook_host}:{hook_port}/webhook/gitea")
    print("  HTTP method:  POST    Content type: application/json")
    print(f"  Secret:       the GITEA_WEBHOOK_SECRET value in {path}")
    print("Stop both servers with Ctrl-C.", flush=True)


def serve_both(python: str = sys.executable) -> int:
    """Run the API and webhook servers; stop both when either exits or on a signal."""
    commands = [
        [python, "-m", "gunicorn", "-c", "python:app.serving.gunicorn_api"],
        [python, "-m", "gunicorn", "-c", "python:app.serving.gunicorn_webhook"],
    ]
    children = [subprocess.Popen(command) for command in commands]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = [child.wait() for child in children]
    return 0 if stopping else max(code for code in codes if code is not None)


def main(argv: list[str]) -> int:
    env_path = Path(".env")
    if argv[:1] == ["init"]:
        added = ensure_env_file(env_path)
        if added:
            print(f"Wrote {', '.join(added)} to {env_path} (mode 0600).")
        print_instructions(env_path, show_key="ORKET_API_KEY" in added)
        return 0
    if argv[:1] == ["serve"]:
        return serve_both()
    print("usage: python -m app.serving.first_run init|serve", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
