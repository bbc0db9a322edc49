"""What both gunicorn config modules share (OPS-3)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from app.serving.startup import start_serving, stop_serving


def install_worker_hooks(namespace: dict[str, Any]) -> None:
    """Define gunicorn's worker hooks in a config module's namespace."""

    def post_worker_init(worker: Any) -> None:
        start_serving(worker.wsgi)
        graceful_exit = worker.handle_exit

        def on_sigterm(signum: int, frame: Any) -> None:
            # Signal handlers must stay short: the shutdown steps run on a thread
            # while gunicorn drains connections.
            threading.Thread(
                target=worker.wsgi.extensions["orket"].begin_shutdown,
                name="orket-shutdown",
                daemon=True,
            ).start()
            graceful_exit(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    def worker_int(worker: Any) -> None:
        # SIGINT/SIGQUIT mean a quick stop: close sockets, stop workers, then leave at
        # once, so no thread blocked in a request can hold the process open.
        app = getattr(worker, "wsgi", None)
        if app is not None and hasattr(app, "extensions"):
            stop_serving(app)
        logging.shutdown()
        os._exit(0)

    def worker_exit(server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        if app is not None and hasattr(app, "extensions"):
            stop_serving(app)

    namespace["post_worker_init"] = post_worker_init
    namespace["worker_int"] = worker_int
    namespace["worker_exit"] = worker_exit
